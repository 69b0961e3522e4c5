"""The training loop end to end on tiny data: loss falls, checkpoints reload
to identical captions, a SIGKILLed run resumes where it stopped, a
SIGTERMed one saves its step first, and bad run directories give one-line
errors."""

import itertools
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from conftest import REPO
from im2txt_ext import runs
from im2txt_ext.config import ExperimentConfig, apply_overrides
from im2txt_ext.errors import InputError
from im2txt_ext.inference import Captioner, encoder_fn
from im2txt_ext.models.decoder import scheduled_sampling_seeds
from im2txt_ext.training.losses import perplexity
from im2txt_ext.training.stopping import TrainingStopped
from im2txt_ext.training.trainer import Trainer, learned_variables, objective_of


def tiny_config(scene_data, **train):
  root, paths = scene_data
  config = ExperimentConfig(name="tiny")
  config.data.train_captions = paths["train"]
  config.data.val_captions = paths["val"]
  config.data.images_dir = str(root / "images")
  config.data.image_size = 32
  config.data.shuffle_buffer = 64
  config.model.embedding_size = 16
  config.model.hidden_size = 32
  config.model.dropout = 0.0
  config.train.batch_size = 16
  config.train.train_encoder_after = 0
  config.train.validation_images = 8
  defaults = dict(num_steps=30, checkpoint_every=10, validate_every=15,
                  log_every=10)
  for key, value in {**defaults, **train}.items():
    setattr(config.train, key, value)
  return config


def test_training_lowers_loss_and_reloads_identically(scene_data, tmp_path,
                                                      monkeypatch):
  config = tiny_config(scene_data, learning_rate=5e-3)
  trainer = Trainer(config, str(tmp_path / "run"), quiet=True)
  summary = trainer.train()
  assert summary["steps"] == 30
  assert summary["final_loss"] < summary["first_loss"] - 0.3
  for name in ("config.json", "vocab.txt", "checkpoints", "best", "train"):
    assert os.path.exists(tmp_path / "run" / name)

  # The latest checkpoint reloads into a fresh model with identical captions.
  records = trainer.val_records
  expected = Captioner.__new__(Captioner)  # Reuse the trained decoder.
  expected.decoder = expected.searched = trainer.decoder
  expected.vocab = trainer.vocab
  expected.image_size, expected._searches = 32, {}
  expected.tokens = trainer.vocab.special_tokens()
  expected.encode = encoder_fn(trainer.decoder)
  reloaded = Captioner(str(tmp_path / "run"), which="latest")
  assert reloaded.model.step == 30

  # Inference runs the image encoder traced, never eagerly (an eager call
  # of a Keras functional model keeps all its layers' outputs alive).
  image_encodes = []
  encode = type(reloaded.decoder).encode

  def spy(decoder, batch, training=False):
    if "image" in batch:
      image_encodes.append(tf.executing_eagerly())
    return encode(decoder, batch, training)

  monkeypatch.setattr(type(reloaded.decoder), "encode", spy)
  want = expected.caption_records(records, beam_size=2)
  got = reloaded.caption_records(records, beam_size=2)
  assert got == want and len(got) == len(records)
  assert perplexity(reloaded.decoder, reloaded.reference_batches(records)) > 1
  assert image_encodes and not any(image_encodes)


def test_sigterm_saves_its_step_and_the_run_resumes_there(scene_data,
                                                          tmp_path):
  """SIGTERM during step 7 (checkpoints every 5) ends the training after
  that step with a checkpoint of it; the run resumes at step 7 with its
  saved config, to which overrides (--set) apply."""
  run_dir = str(tmp_path / "run")
  config = tiny_config(scene_data, num_steps=10, checkpoint_every=5)
  first = Trainer(config, run_dir, quiet=True)
  batches = first.iterator

  def terminated_at_the_seventh():
    for drawn in itertools.count(1):
      if drawn == 7:
        os.kill(os.getpid(), signal.SIGTERM)
      yield next(batches)

  first.iterator = terminated_at_the_seventh()
  handler = signal.getsignal(signal.SIGTERM)
  with pytest.raises(TrainingStopped, match="stopped by SIGTERM at step 7"
                     ) as stopped:
    first.train()
  assert stopped.value.exit_status == 143
  assert signal.getsignal(signal.SIGTERM) is handler  # Put back.
  assert tf.train.latest_checkpoint(os.path.join(run_dir, "checkpoints")
                                    ).endswith("ckpt-7")
  saved = ExperimentConfig.load(os.path.join(run_dir, "config.json"))

  # The saved config wins over another one: a run directory is one run.
  longer = apply_overrides(config, ["train.num_steps=15"])
  trainer = Trainer(longer, run_dir, quiet=True)
  assert trainer.config.train.num_steps == 10
  assert int(trainer.step.numpy()) == 7
  assert int(trainer.optimizer.iterations.numpy()) == 7

  # --set train.num_steps=15 with no --config: trains the run further.
  started = time.time()
  summary = Trainer(apply_overrides(ExperimentConfig(),
                                    ["train.num_steps=15"]), run_dir,
                    quiet=True, overrides=["train.num_steps=15"]).train()
  assert summary["steps"] == 15
  # The run's training time counts both parts (the checkpoint keeps it).
  before = float(first.seconds.numpy())
  assert before < summary["seconds"] < before + time.time() - started
  # So does its first step's loss, not the first of the resumed part.
  assert summary["first_loss"] == float(first.first_loss.numpy()) > \
      summary["final_loss"]
  resumed = ExperimentConfig.load(os.path.join(run_dir, "config.json"))
  assert resumed.train.num_steps == 15
  saved.train.num_steps = 15
  assert resumed.to_dict() == saved.to_dict()  # Only that field changed.
  # An override of the model cannot resume the run, and leaves it intact.
  with pytest.raises(InputError, match="checkpoint does not match"):
    Trainer(config, run_dir, quiet=True,
            overrides=["model.hidden_size=48"])
  kept = ExperimentConfig.load(os.path.join(run_dir, "config.json"))
  assert kept.to_dict() == resumed.to_dict()


def test_a_failed_first_start_does_not_bind_the_run_directory(scene_data,
                                                               tmp_path):
  run_dir = str(tmp_path / "run")
  good = tiny_config(scene_data, num_steps=2, checkpoint_every=2,
                     validate_every=2)
  typo = apply_overrides(good, [
      f"data.train_captions={good.data.train_captions}.typo"])
  with pytest.raises(InputError, match="caption file not found"):
    Trainer(typo, run_dir, quiet=True)
  trainer = Trainer(good, run_dir, quiet=True)  # The corrected command.
  assert trainer.config.to_dict() == good.to_dict()
  assert trainer.train()["steps"] == 2
  assert ExperimentConfig.load(os.path.join(
      run_dir, "config.json")).to_dict() == good.to_dict()


def _train_command(config_path, run_dir):
  return [sys.executable, "-m", "im2txt_ext.cli.train",
          f"--config={config_path}", f"--run_dir={run_dir}", "--quiet"]


def _final_weights(run_dir):
  model = runs.TrainedModel(str(run_dir), which="latest", with_encoder=True)
  # Not the seed generators' states, which the trainer's checkpoint holds
  # but not the model's.
  return model.step, [v.numpy() for v in learned_variables(model.decoder)]


@pytest.mark.parametrize("decoder", ["show_and_tell", "hard_attention"])
def test_sigkill_and_resume_matches_uninterrupted_run(scene_data, tmp_path,
                                                      decoder):
  """With dropout, and for hard attention its sampled locations: the
  resumed run draws what the unbroken one drew after the checkpoint."""
  config = tiny_config(scene_data, num_steps=16, checkpoint_every=4,
                       validate_every=1000)
  config.model.decoder = decoder
  config.model.dropout = 0.3
  config_path = str(tmp_path / "config.json")
  config.save(config_path)
  env = dict(os.environ, TF_DETERMINISTIC_OPS="1", TF_CPP_MIN_LOG_LEVEL="2",
             PYTHONPATH=str(REPO))
  full = subprocess.run(_train_command(config_path, tmp_path / "full"),
                        env=env, capture_output=True, text=True, timeout=300)
  assert full.returncode == 0, full.stderr[-2000:]

  killed_dir = tmp_path / "killed"
  proc = subprocess.Popen(_train_command(config_path, killed_dir), env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)
  deadline = time.time() + 240
  index = killed_dir / "checkpoints" / "checkpoint"
  while time.time() < deadline and proc.poll() is None:
    if index.exists() and "ckpt-8" in index.read_text():
      break
    time.sleep(0.05)
  proc.send_signal(signal.SIGKILL)
  proc.wait(timeout=30)
  assert proc.returncode == -signal.SIGKILL, "run finished before the kill"
  saved = tf.train.latest_checkpoint(str(killed_dir / "checkpoints"))
  assert saved and int(saved.rsplit("-", 1)[1]) < 16

  resumed = subprocess.run(_train_command(config_path, killed_dir), env=env,
                           capture_output=True, text=True, timeout=300)
  assert resumed.returncode == 0, resumed.stderr[-2000:]
  assert "resumed from" in resumed.stdout
  assert json.loads(resumed.stdout.strip().splitlines()[-1])["steps"] == 16

  step_a, weights_a = _final_weights(tmp_path / "full")
  step_b, weights_b = _final_weights(killed_dir)
  assert step_a == step_b == 16
  assert len(weights_a) == len(weights_b) > 10
  for a, b in zip(weights_a, weights_b):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_two_phase_training_fine_tunes_the_cnn_from_its_step(scene_data,
                                                             tmp_path):
  config = tiny_config(scene_data, num_steps=6, train_encoder_after=3,
                       checkpoint_every=3, validate_every=100)
  trainer = Trainer(config, str(tmp_path / "run"), quiet=True)
  cnn = trainer.decoder.encoder.get_layer("scene_cnn")
  kernel = cnn.get_layer("block0_conv").kernel
  moving_mean = cnn.get_layer("block0_bn").moving_mean
  start, start_mean = kernel.numpy(), moving_mean.numpy()
  trainer.config.train.num_steps = 3
  trainer.train()
  np.testing.assert_array_equal(kernel.numpy(), start)  # Phase 1: frozen.
  np.testing.assert_array_equal(moving_mean.numpy(), start_mean)
  trainer.config.train.num_steps = 6
  trainer.train()
  assert np.abs(kernel.numpy() - start).max() > 0  # Phase 2: fine-tuned,
  # with batch statistics ("auto" for a CNN from random weights).
  assert np.abs(moving_mean.numpy() - start_mean).max() > 0
  assert int(trainer.optimizer.iterations.numpy()) == 6


def test_fine_tuning_with_frozen_batch_norm_and_a_zero_cnn_rate(scene_data,
                                                                tmp_path):
  """encoder_batch_norm "frozen" keeps the CNN's moving statistics, and
  encoder_learning_rate_scale 0 its weights, while the decoder trains."""
  config = tiny_config(scene_data, num_steps=3, checkpoint_every=3,
                       validate_every=100, encoder_batch_norm="frozen",
                       encoder_learning_rate_scale=0.0)
  trainer = Trainer(config, str(tmp_path / "run"), quiet=True)
  cnn = trainer.decoder.encoder.get_layer("scene_cnn")
  watched = [cnn.get_layer("block0_conv").kernel,
             cnn.get_layer("block0_bn").gamma,
             cnn.get_layer("block0_bn").moving_mean,
             cnn.get_layer("block0_bn").moving_variance]
  start = [v.numpy() for v in watched]
  output = trainer.decoder.logits_layer.kernel
  start_output = output.numpy()
  trainer.train()
  for variable, value in zip(watched, start):
    np.testing.assert_array_equal(variable.numpy(), value)
  assert np.abs(output.numpy() - start_output).max() > 0
  config.train.encoder_batch_norm = "moving"
  with pytest.raises(InputError, match="unknown train.encoder_batch_norm "
                     "'moving': use auto, frozen or batch"):
    Trainer(config, str(tmp_path / "other"), quiet=True)


def test_fine_tuning_starts_from_a_run_on_cached_features(scene_data,
                                                        tmp_path):
  """train.init_from a run on cached features, training from images: the
  decoder starts with that run's best weights and the CNN with the weights
  its features came from; a run on another CNN's features is refused."""
  from im2txt_ext.data import readers
  from im2txt_ext.encoders.backbones import build_encoder
  from im2txt_ext.encoders.features import extract_features
  weights = str(tmp_path / "scene_cnn.weights.h5")
  encoder = build_encoder("scene_cnn", None, 32)
  encoder.get_layer("scene_cnn").save_weights(weights)
  config = tiny_config(scene_data, num_steps=4, checkpoint_every=4,
                       validate_every=4, train_encoder_after=-1)
  config.model.encoder, config.model.encoder_weights = "scene_cnn", weights
  records = [r for name in ("train_captions", "val_captions") for r in
             readers.read_dataset(getattr(config.data, name),
                                  config.data.images_dir)]
  features = str(tmp_path / "pooled.npy")
  extract_features(records, encoder, features, "pooled", batch_size=16)
  config.data.features = features
  Trainer(config, str(tmp_path / "head"), quiet=True).train()
  head = runs.TrainedModel(str(tmp_path / "head"), with_encoder=False)

  config.data.features = ""
  config.train.init_from = str(tmp_path / "head")
  config.train.train_encoder_after = 0
  trainer = Trainer(config, str(tmp_path / "tuned"), quiet=True)
  cnn = trainer.decoder.encoder.get_layer("scene_cnn")
  for got, want in zip(cnn.weights, encoder.get_layer("scene_cnn").weights,
                       strict=True):
    np.testing.assert_array_equal(got.numpy(), want.numpy())
  decoder_weights = [w for w in trainer.decoder.weights
                     if not any(w is v for v in cnn.weights)]
  assert len(decoder_weights) == len(head.decoder.weights)
  for got, want in zip(decoder_weights, head.decoder.weights):
    np.testing.assert_array_equal(got.numpy(), want.numpy())
  kernel = cnn.get_layer("block0_conv").kernel.numpy()
  trainer.train()  # It fine-tunes, and its checkpoints reload with the CNN.
  assert np.abs(cnn.get_layer("block0_conv").kernel.numpy() -
                kernel).max() > 0
  tuned = runs.TrainedModel(str(tmp_path / "tuned"), which="latest")
  np.testing.assert_array_equal(
      tuned.decoder.encoder.get_layer("scene_cnn")
      .get_layer("block0_conv").kernel.numpy(),
      cnn.get_layer("block0_conv").kernel.numpy())

  config.model.encoder_weights = ""  # Another (random) CNN.
  with pytest.raises(InputError, match="the run trained on features of "
                     "encoder, weights and image size"):
    Trainer(config, str(tmp_path / "other"), quiet=True)


def test_scheduled_sampling_draws_have_their_own_streams():
  """Every draw of 8 word positions of 4 training steps (seed [0, step], as
  the trainer passes it) has a seed of its own; with seed + [t, 0] for the
  word and + 1 for the coin, the coin at (step, t) was the word at
  (step + 1, t + 1)."""
  seeds = [tuple(s.numpy()) for step in range(4) for t in range(8)
           for s in scheduled_sampling_seeds(tf.constant([0, step]),
                                             tf.constant(t))]
  assert len(set(seeds)) == len(seeds) == 64


def test_scheduled_sampling_feeds_the_drawn_words():
  """sampled_forward with probability 0.5 gives the logits of teacher
  forcing on the words its draws pick: at step t the sample from
  scheduled_sampling_seeds' first seed where the coin from the second is
  below 0.5, else the true word."""
  config = ExperimentConfig()
  config.model.embedding_size, config.model.hidden_size = 8, 16
  config.model.dropout = 0.0
  decoder = runs.build_decoder(config, 12, with_encoder=False)
  features = tf.random.stateless_normal([6, 5], [0, 1])
  ids = tf.random.stateless_uniform([6, 7], [0, 2], 3, 12, tf.int32)
  runs.build_from_batch(decoder, {"features": features, "input_ids": ids})
  seed = tf.constant([3, 9])
  logits, _ = decoder.sampled_forward(features, ids, 0.5, False, seed)
  fed = [ids[:, 0]]
  for t in range(6):
    sample_seed, coin_seed = scheduled_sampling_seeds(seed, tf.constant(t))
    sampled = tf.cast(tf.random.stateless_categorical(
        logits[:, t], 1, sample_seed)[:, 0], tf.int32)
    coin = tf.random.stateless_uniform([6], coin_seed) < 0.5
    fed.append(tf.where(coin, sampled, ids[:, t + 1]))
  fed = tf.stack(fed, axis=1)
  assert 0 < int(tf.reduce_sum(tf.cast(fed[:, 1:] != ids[:, 1:],
                                       tf.int32))) < 36
  want, _ = decoder.teacher_forced(features, fed, training=False)
  np.testing.assert_allclose(logits, want, atol=1e-5)


def test_bad_run_directories(scene_data, tmp_path):
  with pytest.raises(InputError, match="run directory not found"):
    Captioner(str(tmp_path / "missing"))
  (tmp_path / "empty").mkdir()
  with pytest.raises(InputError, match="not a run directory"):
    Captioner(str(tmp_path / "empty"))
  config = tiny_config(scene_data, num_steps=2, checkpoint_every=2,
                       validate_every=2)
  Trainer(config, str(tmp_path / "run"), quiet=True).train()
  # A vocabulary that is not the one the checkpoint was trained with.
  vocab_path = tmp_path / "run" / "vocab.txt"
  good_vocab = vocab_path.read_text()
  vocab_path.write_text("".join(good_vocab.splitlines(True)[:-1]))
  with pytest.raises(InputError, match="does not match the model"):
    Captioner(str(tmp_path / "run"))
  vocab_path.write_text(good_vocab)
  # A config that names another model than the checkpoint holds.
  config.model.hidden_size = 48
  config.save(str(tmp_path / "run" / "config.json"))
  with pytest.raises(InputError, match="checkpoint does not match"):
    Captioner(str(tmp_path / "run"))


def test_config_errors(tmp_path):
  path = tmp_path / "c.json"
  path.write_text('{"train": {"num_stepz": 3}}')
  with pytest.raises(InputError, match=r"unknown TrainConfig field\(s\) "
                     r"\['num_stepz'\]"):
    ExperimentConfig.load(str(path))
  path.write_text('{"train": {"num_steps": "many"}}')
  with pytest.raises(InputError, match="TrainConfig.num_steps must be int"):
    ExperimentConfig.load(str(path))
  config = apply_overrides(ExperimentConfig(), ["model.hidden_size=8",
                                                "model.decoder=rnn_baseline"])
  assert config.model.hidden_size == 8
  assert config.model.decoder == "rnn_baseline"


def test_decoder_options_that_cannot_be_built_are_input_errors():
  for overrides, message in [
      (["model.cell=nope"], "model 'show_and_tell': cell must be one of"),
      (['model.decoder_options={"inference": "argmax"}'],
       "model 'show_and_tell': Unrecognized keyword arguments"),
      (["model.decoder=hard_attention",
        'model.decoder_options={"inference": "mean"}'],
       "model 'hard_attention': inference must be 'argmax' or 'expectation'")]:
    with pytest.raises(InputError, match=message):
      runs.build_decoder(apply_overrides(ExperimentConfig(), overrides), 10,
                         with_encoder=False)


def test_hard_attention_refuses_scheduled_sampling():
  config = apply_overrides(ExperimentConfig(), [
      "model.decoder=hard_attention", "model.hidden_size=8",
      "train.scheduled_sampling=0.25"])
  decoder = runs.build_decoder(config, 10, with_encoder=False)
  with pytest.raises(InputError, match="'hard_attention' trains with "
                     "teacher forcing only"):
    objective_of(config, decoder, None, [])
