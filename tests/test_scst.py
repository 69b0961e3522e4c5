"""Self-critical sequence training: the fast CIDEr-D equals pycocoevalcap's,
the policy gradient pushes the right way, the samples are scored under the
policy that drew them for every decoder, and an SCST run raises validation
CIDEr-D over its cross-entropy start."""

import os

import numpy as np
import pytest
import tensorflow as tf
from pycocoevalcap.cider.cider import Cider

from im2txt_ext import runs, search
from im2txt_ext.config import ExperimentConfig
from im2txt_ext.data import readers, scenes
from im2txt_ext.data.tokenizer import tokenize
from im2txt_ext.data.vocabulary import Vocabulary
from im2txt_ext.errors import InputError
from im2txt_ext.metrics import caption_metrics
from im2txt_ext.training import objectives
from im2txt_ext.training.cider_d import CiderD
from im2txt_ext.training.scst import SelfCritical, policy_gradient_loss
from im2txt_ext.training.trainer import Trainer
from test_training import tiny_config


def _references(scene_data, split="val"):
  records = readers.read_dataset(scene_data[1][split])
  return {r.image_id: [tokenize(c) for c in r.captions] for r in records}


def _candidates(references, seed=0):
  """Captions of other images, cut short, stretched with repeats and words
  no reference has, and one empty: every branch of CIDEr-D."""
  rng = np.random.default_rng(seed)
  pool = [c for refs in references.values() for c in refs]
  out = {}
  for i, image_id in enumerate(references):
    caption = list(pool[rng.integers(len(pool))])
    if i % 4 == 1:
      caption = caption[:rng.integers(len(caption) + 1)]
    elif i % 4 == 2:
      caption = caption + ["zebra", "a", "zebra"] + caption[:3]
    elif i % 4 == 3:
      caption = list(references[image_id][0])  # A perfect match.
    out[image_id] = caption
  out[next(iter(references))] = []
  return out


def _pycocoevalcap(references, candidates):
  ids = list(candidates)
  _, scores = Cider().compute_score(
      {i: [" ".join(c) for c in references[i]] for i in ids},
      {i: [" ".join(candidates[i])] for i in ids})
  return np.array(scores)


def test_cider_d_equals_pycocoevalcap(scene_data):
  references = _references(scene_data)
  # Images with fewer references than others, to fill the ragged slots.
  for i, image_id in enumerate(list(references)[:5]):
    references[image_id] = references[image_id][:i + 1]
  candidates = _candidates(references)
  want = _pycocoevalcap(references, candidates)
  got = CiderD(references).score(list(candidates), list(candidates.values()))
  np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
  assert want.min() == 0.0 and want.max() > 5.0  # Empty ... perfect.


def test_cider_d_with_a_fixed_corpus(scene_data):
  """Scoring a few images (twice each) against the training corpus gives
  pycocoevalcap's scores of those images among the whole corpus."""
  references = _references(scene_data, "train")
  candidates = _candidates(references, seed=1)
  want = dict(zip(candidates, _pycocoevalcap(references, candidates)))
  scorer = CiderD(references)
  picked = list(candidates)[3:9] * 2
  got = scorer.score(picked, [candidates[i] for i in picked])
  np.testing.assert_allclose(got, [want[i] for i in picked], atol=1e-6)
  with pytest.raises(InputError, match="no references for image"):
    scorer.score(["nope"], [["a"]])


def test_rewards_read_word_ids_as_the_vocabulary_decodes_them(scene_data):
  references = {k: [" ".join(c) for c in v]
                for k, v in _references(scene_data).items()}
  vocab = Vocabulary.build(tokenize(c) for v in references.values()
                           for c in v)
  loss = SelfCritical(None, vocab, references)
  image_ids = list(references)[:3]
  captions = [tokenize(references[image_ids[0]][0]),
              tokenize(references[image_ids[1]][0]) + ["<unk>"], []]
  ids = np.zeros([3, 20], np.int32)  # <pad> after <end>.
  for row, words in enumerate(captions):
    encoded = [vocab.word_to_id(w) for w in words] + [vocab.end_id]
    ids[row, :len(encoded)] = encoded
  ids[0, 1:] = np.roll(ids[0, 1:], 1)  # A <pad> inside counts for nothing.
  ids[2, 1:3] = [vocab.word_to_id("red"), vocab.end_id]  # After <end>.
  got = loss.rewards(np.array([i.encode() for i in image_ids]), ids)
  want = loss.scorer.score(image_ids, captions)
  np.testing.assert_allclose(got, want, rtol=1e-6)
  assert got.dtype == np.float32 and got[0] > got[1] > got[2] == 0


def test_policy_gradient_raises_samples_above_the_baseline():
  """Two captions of the same words; the first scored above the baseline,
  the second below. One gradient step makes the first likelier and the
  second less likely, and nothing after <end> gets a gradient."""
  logits = tf.Variable(tf.zeros([2, 3, 4]))
  words = tf.constant([[1, 2, 3], [2, 1, 3]])
  lengths = tf.constant([2, 3])  # Caption 0 ended at its 2nd word.
  reward, baseline = tf.constant([1.5, 0.5]), tf.constant([1.0, 1.0])

  def caption_log_probs():
    mask = tf.sequence_mask(lengths, 3, tf.float32)
    return tf.reduce_sum(tf.gather(tf.nn.log_softmax(logits), words,
                                   batch_dims=2) * mask, axis=1).numpy()

  before = caption_log_probs()
  with tf.GradientTape() as tape:
    loss, entropy = policy_gradient_loss(logits, words, lengths,
                                         reward - baseline)
  grad = tape.gradient(loss, logits)
  np.testing.assert_allclose(float(entropy), np.log(4.0), rtol=1e-6)
  assert np.all(grad[0, 2].numpy() == 0.0)
  logits.assign_sub(0.5 * grad)
  after = caption_log_probs()
  assert after[0] > before[0] and after[1] < before[1]


@pytest.mark.parametrize("name", ["rnn_baseline", "show_and_tell",
                                  "soft_attention", "hard_attention",
                                  "transformer"])
def test_samples_are_scored_under_the_policy_that_drew_them(name):
  """The teacher-forced pass gives each sample the log-probability that
  search.sample computed while drawing it (both at temperature 1, over the
  words the search may emit; the samples were drawn at 1.5 from the same
  logits): the estimate is on-policy for every decoder."""
  config = ExperimentConfig()
  config.model.decoder = name
  config.model.embedding_size = config.model.hidden_size = 8
  decoder = runs.build_decoder(config, 20, with_encoder=False)
  spatial = decoder.feature_kind == "spatial"
  features = tf.random.stateless_normal([4, 5, 6] if spatial else [4, 6],
                                        [1, 2])
  runs.build_from_batch(decoder, {"features": features,
                                  "input_ids": tf.zeros([4, 2], tf.int32)})
  sampled = search.sample(decoder, features, 7, temperature=1.5, seed=(3, 4))
  words, lengths = sampled.ids[:, 0], sampled.lengths[:, 0]
  inputs = tf.concat([tf.ones([4, 1], tf.int32), words[:, :-1]], axis=1)
  logits, _ = decoder.teacher_forced(features, inputs, training=False)
  advantage = tf.one_hot(tf.range(4), 4)  # Loss k: -log p(sample k).
  for k in range(4):
    loss, _ = policy_gradient_loss(
        logits, words, lengths, advantage[k], num_words=1.0,
        banned_ids=search.banned_words(search.PLAIN_TOKENS))
    np.testing.assert_allclose(-float(loss), sampled.log_probs[k, 0],
                               rtol=1e-4)


def test_samples_and_greedy_baseline_never_hold_unk():
  """A decoder that all but always says <unk> and never <end>: the
  captions SCST rewards, the samples and the greedy baseline, hold no
  <unk> in any position, as search bans it everywhere else."""
  references = {"1": ["a red ball"], "2": ["a blue box"]}
  vocab = Vocabulary.build(tokenize(c) for v in references.values()
                           for c in v)
  config = ExperimentConfig()
  config.model.embedding_size = config.model.hidden_size = 8
  decoder = runs.build_decoder(config, len(vocab), with_encoder=False)
  features = tf.random.stateless_normal([2, 6], [1, 2])
  runs.build_from_batch(decoder, {"features": features,
                                  "input_ids": tf.zeros([2, 2], tf.int32)})
  decoder.logits_layer.bias.assign(50.0 * (
      tf.one_hot(vocab.unk_id, len(vocab)) -
      tf.one_hot(vocab.end_id, len(vocab))))
  loss = SelfCritical(decoder, vocab, references, samples=3, max_length=6)
  scored = []
  rewards = loss.rewards
  loss.rewards = lambda image_ids, ids: (scored.append(ids), rewards(
      image_ids, ids))[1]
  inputs = objectives.LossInputs(
      decoder, features, {"image_id": tf.constant(list(references))},
      tf.constant([0, 0]), None)
  loss(inputs, loss.prepare(inputs))
  assert [ids.shape for ids in scored] == [(6, 6), (2, 6)]  # Samples, greedy.
  for ids in scored:
    assert not (ids == vocab.unk_id).any()


def test_bad_settings_are_one_line_errors():
  vocab = Vocabulary(["a"])
  references = {"1": ["a"]}
  for kwargs, message in [(dict(baseline="beam"), "unknown scst_baseline"),
                          (dict(baseline="mean", samples=1), ">= 2"),
                          (dict(temperature=0.0), "must be > 0")]:
    with pytest.raises(InputError, match=message):
      SelfCritical(None, vocab, references, **kwargs)


def test_scst_step_of_hard_attention_with_mean_baseline_and_xent(
    scene_data, tmp_path):
  """The trainer's SCST step runs the attention decoders too, with the other
  baseline and the cross-entropy mixed in, and logs its scalars."""
  config = tiny_config(scene_data, scst=True, scst_baseline="mean",
                       scst_samples=3, scst_xent_weight=0.5)
  config.model.decoder = "hard_attention"
  trainer = Trainer(config, str(tmp_path / "run"), quiet=True)
  logged = trainer._step_fn(True, False)(
      next(trainer.iterator), tf.constant(0.0), tf.constant([0, 0]))
  assert float(trainer.decoder.reward_baseline) != 0.0  # Its statistics.
  logged = {k: float(v) for k, v in logged.items()}
  assert {"loss", "cross_entropy", "reinforce", "policy_loss", "reward",
          "baseline", "word_entropy", "sample_length"} <= set(logged)
  assert all(np.isfinite(v) for v in logged.values())
  assert logged["reward"] == pytest.approx(logged["baseline"], abs=1e-5)
  assert logged["loss"] == pytest.approx(
      logged["policy_loss"] + 0.5 * (logged["cross_entropy"] + sum(
          logged[k] for k in ("reinforce", "entropy", "doubly_stochastic")
          if k in logged)), rel=1e-4)


def test_scst_alone_skips_cross_entropy_and_keeps_the_best_cider_d(
    scene_data, tmp_path, monkeypatch):
  """With scst_xent_weight 0 the step runs no teacher-forced pass in
  training mode (the only one is over the samples, in inference mode) and
  logs no cross-entropy; validation scores CIDEr-D as pycocoevalcap does,
  and that picks the best checkpoint."""
  config = tiny_config(scene_data, num_steps=2, validate_every=2,
                       checkpoint_every=2, scst=True, scst_samples=2)
  trainer = Trainer(config, str(tmp_path / "run"), quiet=True)
  passes = []
  teacher_forced = trainer.decoder.teacher_forced

  def recorded(features, input_ids, training=False):
    passes.append(training)
    return teacher_forced(features, input_ids, training=training)
  monkeypatch.setattr(trainer.decoder, "teacher_forced", recorded)
  summary = trainer.train()  # Validates once, after the last step.
  assert passes and not any(passes)
  scores, captions = trainer.validate()
  references = {r.image_id: r.captions for r in
                trainer.val_records[:config.train.validation_images]}
  want = caption_metrics(captions, references, meteor=False)
  assert scores["val_cider_d"] == pytest.approx(want["CIDEr-D"], abs=1e-6)
  assert scores["val_bleu4"] == pytest.approx(want["BLEU-4"], abs=1e-9)
  assert trainer.selection == "val_cider_d"
  assert summary["best_val_cider_d"] == pytest.approx(
      scores["val_cider_d"], abs=1e-6)
  assert "best_val_bleu4" not in summary
  assert tf.train.latest_checkpoint(str(tmp_path / "run" / "best"))
  logged = trainer._step_fn(True, False)(
      next(trainer.iterator), tf.constant(0.0), tf.constant([0, 2]))
  assert "cross_entropy" not in logged
  assert float(logged["loss"]) == float(logged["policy_loss"])


def test_best_by_picks_the_checkpoint_score_of_any_run(scene_data,
                                                      tmp_path):
  """train.best_by "CIDEr-D" picks a cross-entropy run's best checkpoint by
  CIDEr-D (e.g. to start SCST from), "auto" by BLEU-4; a bad name is a
  one-line error before anything is written."""
  from im2txt_ext.training.trainer import best_checkpoint_score
  config = tiny_config(scene_data, num_steps=2, validate_every=2,
                       checkpoint_every=2, best_by="CIDEr-D")
  trainer = Trainer(config, str(tmp_path / "run"), quiet=True)
  summary = trainer.train()
  scores, _ = trainer.validate()
  assert trainer.selection == "val_cider_d"
  assert summary["best_val_cider_d"] == pytest.approx(
      scores["val_cider_d"], abs=1e-6)
  config.train.best_by = "auto"
  assert best_checkpoint_score(config) == "val_bleu4"
  config.train.best_by = "METEOR"
  with pytest.raises(InputError, match="unknown train.best_by 'METEOR': use "
                     "auto, BLEU-4 or CIDEr-D"):
    Trainer(config, str(tmp_path / "bad"), quiet=True)
  assert not os.path.exists(tmp_path / "bad" / "config.json")


@pytest.fixture(scope="module")
def scst_scenes(tmp_path_factory):
  """More scenes than ``scene_data``: enough validation images (64) for
  CIDEr-D to measure a change, enough training images (256) to generalise."""
  root = tmp_path_factory.mktemp("scst_scenes")
  return root, scenes.generate(str(root), num_train=256, num_val=64,
                               num_test=4, seed=1, image_size=32)


def _validation_cider_d(trainer):
  _, captions = trainer.validate()
  references = {r.image_id: r.captions for r in trainer.val_records}
  return caption_metrics(captions, references, meteor=False)["CIDEr-D"]


def test_scst_raises_validation_cider_d(scst_scenes, tmp_path):
  """300 cross-entropy steps, then 50 SCST steps from that checkpoint
  (greedy baseline, 5 samples): validation CIDEr-D rises (by 0.3 to 0.55
  over six seeds when this test was written; 0.1 asked here)."""
  settings = dict(validate_every=1000, checkpoint_every=1000,
                  validation_images=64)
  xent = Trainer(tiny_config(scst_scenes, num_steps=300, learning_rate=5e-3,
                             **settings), str(tmp_path / "xent"), quiet=True)
  xent.train()
  config = tiny_config(scst_scenes, num_steps=50, learning_rate=1e-3,
                       init_from=str(tmp_path / "xent"), scst=True,
                       **settings)
  trainer = Trainer(config, str(tmp_path / "scst"), quiet=True)
  assert trainer.validate()[1] == xent.validate()[1]  # Started from it.
  start = _validation_cider_d(trainer)
  summary = trainer.train()
  assert summary["steps"] == 50
  assert _validation_cider_d(trainer) > start + 0.1
