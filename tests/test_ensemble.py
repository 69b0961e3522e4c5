"""models.ensemble: a step is the normalised geometric mean of the members'
word distributions, the beam search keeps each member's state with its
beam, and run directories join an ensemble (Captioner, im2txt-evaluate)
only where they read the same features and vocabulary."""

import json
import shutil

import numpy as np
import pytest
import tensorflow as tf

from im2txt_ext import models, runs, search
from im2txt_ext.errors import InputError
from im2txt_ext.inference import Captioner
from im2txt_ext.models.ensemble import Ensemble
from test_export import run_module
from test_training import tiny_config

V, E, H, D, L, B = 24, 8, 16, 6, 4, 3
PAD, START, END = search.PLAIN_TOKENS.pad, search.PLAIN_TOKENS.start, \
    search.PLAIN_TOKENS.end


def soft_attention(seed):
  """A built soft-attention decoder with random weights."""
  tf.keras.utils.set_random_seed(seed)
  decoder = models.build_decoder("soft_attention", V, embedding_size=E,
                                 hidden_size=H, dropout=0.0)
  runs.build_from_batch(decoder, {"features": tf.zeros([1, L, D]),
                                  "input_ids": tf.zeros([1, 2], tf.int32)})
  return decoder


def log_softmax(x, axis=-1):
  x = np.asarray(x, np.float64)
  return x - np.log(np.exp(x - x.max(axis, keepdims=True)).sum(
      axis, keepdims=True)) - x.max(axis, keepdims=True)


@pytest.fixture(scope="module")
def features():
  return tf.random.stateless_normal([B, L, D], [7, 8])


def test_step_is_the_normalised_geometric_mean(features):
  members = [soft_attention(seed) for seed in (1, 2, 3)]
  ensemble = Ensemble(members)
  words = tf.constant([START, 5, 9], tf.int32)
  out = ensemble.step(words, ensemble.initial_state(features))
  alone = [m.step(words, m.initial_state(features)) for m in members]
  want = log_softmax(np.mean([log_softmax(a.logits) for a in alone], 0))
  np.testing.assert_allclose(log_softmax(out.logits), want, atol=1e-5)
  np.testing.assert_allclose(
      out.attention, np.mean([a.attention for a in alone], 0), atol=1e-6)
  # Each member's new state under its own prefix, the features static.
  for i, a in enumerate(alone):
    for name, value in a.state.items():
      tf.nest.map_structure(np.testing.assert_array_equal,
                            out.state[f"{i}/{name}"], value)
  assert set(ensemble.static_state) == {
      f"{i}/{name}" for i in range(3) for name in members[0].static_state}


def test_beam_search_scores_its_captions_as_teacher_forcing_does(features):
  # Beams change parents at every step; were a member's state left with
  # the wrong beam, a caption's search log-prob would not be its teacher-
  # forced one. <end> made unlikely and the score length-normalised, so
  # that the captions run long and the beams reorder.
  members = [soft_attention(1), soft_attention(2)]
  for member in members:
    bias = member.logits_layer.bias
    bias.assign(tf.tensor_scatter_nd_update(bias, [[END]], [-8.0]))
  ensemble = Ensemble(members)
  result = search.beam_search(ensemble, features, beam_size=6, max_length=7,
                              top_k=6, length_penalty=1.0)
  allowed = np.ones(V, bool)
  allowed[[PAD, START]] = False  # Never emitted: the rest renormalised.
  for b in range(B):
    for k in range(6):
      ids = [w for w in result.ids[b, k].numpy().tolist() if w != PAD]
      inputs = tf.constant([[START] + ids[:-1]], tf.int32)
      logits, _ = ensemble.teacher_forced(features[b:b + 1], inputs)
      log_probs = log_softmax(np.where(allowed, logits[0], -np.inf))
      np.testing.assert_allclose(
          float(result.log_probs[b, k]),
          sum(log_probs[t, w] for t, w in enumerate(ids)), atol=1e-4)
  assert len(ids) == 7  # Long captions: the reordering was exercised.


def test_an_ensemble_of_copies_is_the_model(features):
  decoder = soft_attention(4)
  alone = search.beam_search(decoder, features, 3, 8)
  twice = search.beam_search(Ensemble([decoder, decoder]), features, 3, 8)
  np.testing.assert_array_equal(twice.ids, alone.ids)
  np.testing.assert_allclose(twice.log_probs, alone.log_probs, rtol=1e-5)


def test_members_must_share_the_vocabulary():
  small = models.build_decoder("soft_attention", V - 1, embedding_size=E,
                               hidden_size=H)
  with pytest.raises(ValueError, match="vocabularies differ in size"):
    Ensemble([soft_attention(1), small])
  with pytest.raises(ValueError, match="two or more members"):
    Ensemble([soft_attention(1)])


@pytest.fixture(scope="module")
def feature_runs(scene_data, tmp_path_factory):
  """(run dirs of two tiny soft-attention seeds on the same cached spatial
  features, the features file)."""
  from im2txt_ext.data import readers
  from im2txt_ext.encoders.backbones import build_encoder
  from im2txt_ext.encoders.features import extract_features
  from im2txt_ext.training.trainer import Trainer
  folder = tmp_path_factory.mktemp("ensemble")
  weights = str(folder / "scene_cnn.weights.h5")
  encoder = build_encoder("scene_cnn", None, 32)
  encoder.get_layer("scene_cnn").save_weights(weights)
  config = tiny_config(scene_data, num_steps=6, checkpoint_every=6,
                       validate_every=6, train_encoder_after=-1)
  config.model.decoder = "soft_attention"
  config.model.encoder, config.model.encoder_weights = "scene_cnn", weights
  root, paths = scene_data
  records = [r for name in ("train", "val", "test")
             for r in readers.read_dataset(paths[name], str(root / "images"))]
  features = str(folder / "spatial.npy")
  extract_features(records, encoder, features, "spatial", batch_size=16,
                   progress=False)
  config.data.features = features
  directories = []
  for seed in (0, 1):
    config.train.seed = seed
    directories.append(str(folder / f"seed{seed}"))
    Trainer(config, directories[-1], quiet=True).train()
  return directories, features


def _evaluate(run_dirs, features, paths, output):
  result = run_module("im2txt_ext.cli.evaluate",
                      f"--run_dir={','.join(run_dirs)}",
                      f"--captions={paths['test']}", f"--features={features}",
                      "--meteor=false", "--show=0", f"--output_dir={output}")
  assert result.returncode == 0, result.stderr[-3000:]
  return (json.loads((output / "metrics.json").read_text()),
          [c["generated"] for c in json.loads(
              (output / "captions.json").read_text())])


def test_evaluate_an_ensemble_of_runs(feature_runs, scene_data, tmp_path):
  (first, second), features = feature_runs
  _, paths = scene_data
  metrics, captions = _evaluate([first, second], features, paths,
                                tmp_path / "pair")
  assert metrics["ensemble"] == [first, second]
  assert metrics["checkpoint_step"] == [6, 6]
  assert 1 < metrics["perplexity"] and len(captions) == 16
  # The library's captions are the command's.
  from im2txt_ext.data import readers
  records = readers.read_dataset(paths["test"])
  captioner = Captioner([first, second], with_encoder=False)
  captioner.model.config.data.features = features
  cached = runs.cached_features(captioner.model.config)
  got = captioner.caption_records(records, cached, beam_size=3)
  assert [got[r.image_id] for r in records] == captions
  # A run twice over is that run: the same captions and perplexity.
  from im2txt_ext.training.losses import perplexity
  alone = Captioner(first, with_encoder=False)
  twice = Captioner([first, first], with_encoder=False)
  assert twice.caption_records(records, cached, beam_size=3) == \
      alone.caption_records(records, cached, beam_size=3)
  assert perplexity(twice.decoder, twice.reference_batches(
      records, cached)) == pytest.approx(perplexity(
          alone.decoder, alone.reference_batches(records, cached)), rel=1e-4)


def test_runs_that_cannot_join_an_ensemble(feature_runs, tmp_path):
  (first, second), _ = feature_runs
  other_words = shutil.copytree(second, tmp_path / "other_words")
  lines = (other_words / runs.VOCAB_FILE).read_text().splitlines()
  lines[-1], lines[-2] = lines[-2], lines[-1]
  (other_words / runs.VOCAB_FILE).write_text("\n".join(lines) + "\n")
  def changed(name, field, value):
    """A copy of the second run whose config's data.``field`` is
    ``value``."""
    copy = shutil.copytree(second, tmp_path / name)
    config = json.loads((copy / runs.CONFIG_FILE).read_text())
    config["data"][field] = value
    (copy / runs.CONFIG_FILE).write_text(json.dumps(config))
    return copy
  other_side = changed("other_side", "image_size", 48)
  from_images = changed("from_images", "features", "")
  cases = [
      (other_words, "its vocabulary is not that of"),
      (other_side, "reads spatial features of scene_cnn .* at 48 px, but "
                   ".* reads spatial features of scene_cnn .* at 32 px"),
      (from_images, "trained from images, so its CNN is its own"),
  ]
  for member, message in cases:
    with pytest.raises(InputError, match=message) as error:
      Captioner([first, str(member)], with_encoder=False)
    assert str(member) in str(error.value)


def test_evaluate_an_ensemble_needs_an_output_folder(feature_runs,
                                                     scene_data):
  (first, second), features = feature_runs
  _, paths = scene_data
  result = run_module("im2txt_ext.cli.evaluate",
                      f"--run_dir={first},{second}",
                      f"--captions={paths['test']}")
  assert result.returncode != 0
  assert "give --output_dir" in result.stderr.strip().splitlines()[-1]


def test_caption_image_files_with_an_ensemble(feature_runs, scene_data,
                                              tmp_path):
  """im2txt-caption --model=a,b and im2txt_ext.caption(model=[a, b])
  caption image files with the ensemble: the captions its search gives
  the images' cached features."""
  from im2txt_ext import api
  from im2txt_ext.data import readers
  (first, second), features = feature_runs
  root, paths = scene_data
  records = readers.read_dataset(paths["test"], str(root / "images"))[:5]
  images = [r.image_path for r in records]
  written = tmp_path / "captions.jsonl"
  result = run_module("im2txt_ext.cli.caption", f"--model={first},{second}",
                      f"--images={','.join(images)}", f"--output={written}")
  assert result.returncode == 0, result.stderr[-3000:]
  by_command = [json.loads(line)["caption"]
                for line in written.read_text().splitlines()]
  by_library = [options[0]["caption"] for options in
                api.caption(images, model=[first, second])]
  captioner = Captioner([first, second], with_encoder=False)
  captioner.model.config.data.features = features
  cached = captioner.caption_records(
      records, runs.cached_features(captioner.model.config), beam_size=3)
  assert by_command == by_library == [cached[r.image_id] for r in records]
  assert api.caption(images[0], model=[first]) == api.caption(
      images[0], model=first)  # A list of one is that run.
  with pytest.raises(InputError, match="empty list"):
    api.caption(images[0], model=[])


def test_export_an_ensemble(feature_runs, scene_data, tmp_path):
  """im2txt-export --run_dir=a,b writes a SavedModel that captions images
  as the ensemble of the run directories does; the other formats, which
  hold one decoder, refuse several runs."""
  from im2txt_ext import api
  (first, second), _ = feature_runs
  root, _ = scene_data
  images = [str(root / "images" / f"scene_{i:06d}.png") for i in range(3)]
  result = run_module("im2txt_ext.cli.export", f"--run_dir={first},{second}",
                      f"--output={tmp_path / 'ensemble'}", "--top_k=3")
  assert result.returncode == 0, result.stderr[-3000:]
  saved = tf.saved_model.load(str(tmp_path / "ensemble"))
  out = saved.signatures["serving_default"](
      images=tf.constant([open(p, "rb").read() for p in images]))
  expected = api.caption(images, model=[first, second], beam_size=3,
                         top_k=3)
  assert out["captions"].numpy().astype(str).tolist() == [
      [option["caption"] for option in options] for options in expected]
  np.testing.assert_allclose(out["log_probs"], [
      [option["log_prob"] for option in options] for options in expected],
                             rtol=1e-4)
  alone = api.caption(images, model=first, beam_size=3, top_k=3)
  assert not np.allclose(out["log_probs"], [  # Not the first run's alone.
      [option["log_prob"] for option in options] for options in alone])
  refused = run_module("im2txt_ext.cli.export", f"--run_dir={first},{second}",
                       f"--output={tmp_path / 'lite'}", "--format=tflite")
  assert refused.returncode != 0
  assert "--format=tflite holds one decoder" in \
      refused.stderr.strip().splitlines()[-1]
