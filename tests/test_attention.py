"""Tests of the Show, Attend and Tell decoders, their layers and the figure.

Shape letters: B batch, T caption length, L locations (4x4 maps), D feature
channels, H hidden units (8), V vocabulary (20).
"""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from attention.hard_attention import HardAttention
from attention.show_attend_tell import ShowAttendTell
from attention.soft_attention import SoftAttention
from attention.soft_attention import doubly_stochastic_penalty
from attention.visualize import attention_figure
from im2txt_ext import search
from im2txt_ext.models import word_inputs
from im2txt_ext.training import objectives
from im2txt_ext.training.losses import masked_cross_entropy

V, E, H, D, L, GRID = 20, 8, 8, 6, 16, 4
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _decoder(attention="soft", **options):
  keras.utils.set_random_seed(0)
  return ShowAttendTell(V, attention=attention, embedding_size=E,
                        hidden_size=H, dropout=0.0, **options)


def _terms(decoder, aux, batch, token_nll, words=None):
  """{logged name: value} of the decoder's own loss terms on a given
  forward pass; N = ``words`` or the batch's real words."""
  words = tf.reduce_sum(batch["mask"]) if words is None else words
  inputs = objectives.LossInputs(
      decoder, None, batch, None, words,
      forward=objectives.Forward(None, aux, token_nll, None))
  logs = {}
  for term in decoder.loss_terms():
    logs.update(term(inputs)[1])
  return {name: float(value) for name, value in logs.items()}, inputs


def _features(batch=3, locations=L, seed=0):
  return tf.random.stateless_normal([batch, locations, D], [seed, 1])


def _input_ids(batch=3, length=5, seed=0):
  return tf.random.stateless_uniform([batch, length], [seed, 2], 3, V,
                                     tf.int32)


def _nonzero(grad):
  return grad is not None and float(tf.reduce_max(tf.abs(grad))) > 0


# -- Attention layers ---------------------------------------------------------


def _layer(score):
  return SoftAttention(5 if score == "additive" else H, score=score)


@pytest.mark.parametrize("score", ["additive", "dot"])
def test_weights_sum_to_one_and_context_is_the_expectation(score):
  layer = _layer(score)
  query = tf.random.stateless_normal([2, H], [0, 0])
  features = _features(2)
  context, weights, extras = layer(query, features)
  assert context.shape == (2, D) and weights.shape == (2, L) and not extras
  np.testing.assert_allclose(tf.reduce_sum(weights, -1), [1.0, 1.0],
                             rtol=1e-6)
  np.testing.assert_allclose(context, tf.einsum("bl,bld->bd", weights,
                                                features), rtol=1e-5)
  # The keys computed once per image give the same result.
  again, _, _ = layer(query, features, layer.initial_state(features))
  np.testing.assert_allclose(again, context, rtol=1e-6)


def test_parameter_counts():
  additive = _layer("additive")
  additive(tf.zeros([1, H]), tf.zeros([1, L, D]))
  # W_a, b: (D + 1) * K; W_h: H * K; w: K.
  assert additive.count_params() == (D + 1) * 5 + H * 5 + 5
  dot = _layer("dot")
  dot(tf.zeros([1, H]), tf.zeros([1, L, D]))
  assert dot.count_params() == D * H  # W, as D != H.
  same = SoftAttention(D, score="dot")
  same(tf.zeros([1, D]), tf.zeros([1, L, D]))
  assert same.count_params() == 0  # Plain a_i^T h.
  with pytest.raises(ValueError, match="score must be"):
    SoftAttention(5, score="cosine")


# -- Soft attention -----------------------------------------------------------


def test_single_location_is_the_no_attention_path():
  """With one location (or L copies of one feature) the context is that
  feature whatever the scores: logits ignore the attention weights."""
  decoder = _decoder()
  one = _features(locations=1)
  ids = _input_ids()
  logits, aux = decoder.teacher_forced(one, ids)
  np.testing.assert_allclose(aux["attention"], np.ones([3, 5, 1]))
  # Very different scores, same logits.
  for weight in decoder.attention.weights:
    weight.assign(10.0 * tf.random.stateless_normal(weight.shape, [1, 1]))
  np.testing.assert_allclose(decoder.teacher_forced(one, ids)[0], logits,
                             atol=1e-5)
  # Copies of the feature at 4 locations: weights 1/4 each, same context.
  # init_from_mean sees the same mean, so the whole path is unchanged.
  copies, aux = decoder.teacher_forced(tf.tile(one, [1, 4, 1]), ids)
  np.testing.assert_allclose(copies, logits, atol=1e-5)
  np.testing.assert_allclose(aux["attention"], np.full([3, 5, 4], 0.25),
                             atol=1e-6)


@pytest.mark.parametrize("options", [
    {}, {"score": "dot"},
    {"init_from_mean": False, "gating": False, "deep_output": False}])
def test_teacher_forced_matches_steps(options):
  check_teacher_forced_matches_steps(_decoder(**options))


def check_teacher_forced_matches_steps(decoder, features=None, ids=None):
  """The step loop gives the teacher-forced logits (1e-5) and attention
  (1e-6) at every position; returns (logits, aux, the last state)."""
  features = _features() if features is None else features
  ids = _input_ids() if ids is None else ids
  logits, aux = decoder.teacher_forced(features, ids, training=False)
  # The input is not the word alone: no word-input table to look up.
  assert word_inputs.for_inference(decoder) is decoder
  state = decoder.initial_state(features)
  for t in range(ids.shape[1]):
    out = decoder.step(ids[:, t], state)
    state = out.state
    np.testing.assert_allclose(out.logits, logits[:, t], atol=1e-5)
    np.testing.assert_allclose(out.attention, aux["attention"][:, t],
                               atol=1e-6)
  return logits, aux, state


def test_doubly_stochastic_penalty():
  # Real steps 0..3 each attend one different location of 4; step 4 is
  # padding and attends location 0 again, which must not count.
  alphas = np.concatenate([np.eye(4), [[1.0, 0, 0, 0]]])[None]  # [1, 5, 4]
  mask = tf.constant([[1.0, 1, 1, 1, 0]])
  np.testing.assert_array_equal(doubly_stochastic_penalty(
      tf.constant(alphas, tf.float32), mask), [0.0])
  # Uniform attention over 2 real steps: each location gets 2 / 4.
  uniform = tf.fill([1, 5, 4], 0.25)
  mask = tf.constant([[1.0, 1, 0, 0, 0]])
  np.testing.assert_allclose(doubly_stochastic_penalty(uniform, mask),
                             [4 * 0.5 ** 2])
  assert not _decoder(doubly_stochastic=0.0).loss_terms()


def test_doubly_stochastic_term_is_per_caption_as_eq_14():
  """L = 2 locations. Caption 0 (3 words) covers them 1.5 and 1.5: penalty
  2 * 0.5^2 = 0.5; caption 1 (2 words, one padded step) covers them 2 and
  0: 1 + 1 = 2. lambda = 0.5 over the batch's 5 words, the per-word
  cross-entropy's divisor: 0.5 * 2.5 / 5; under distribution N counts the
  words of the global batch (here 10)."""
  attention = tf.constant([[[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]],
                           [[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]])
  batch = {"mask": tf.constant([[1.0, 1, 1], [1, 1, 0]])}
  np.testing.assert_allclose(doubly_stochastic_penalty(attention,
                                                       batch["mask"]),
                             [0.5, 2.0])
  decoder = _decoder(doubly_stochastic=0.5)
  aux = {"attention": attention}
  assert _terms(decoder, aux, batch, None)[0] == {
      "doubly_stochastic": pytest.approx(0.25)}
  assert _terms(decoder, aux, batch, None, tf.constant(10.0))[0] == {
      "doubly_stochastic": pytest.approx(0.125)}


# -- Hard attention -----------------------------------------------------------


def test_hard_losses_and_reward_baseline_by_hand():
  """Two captions of 2 and 3 words, uniform attention over 2 locations;
  caption 0 fed on samples (log p(s_t) = log 0.5), caption 1 on the
  expectation. R = -sum_t token_nll = (-2, -6)."""
  decoder = _decoder("hard")
  half = float(np.log(0.5))
  aux = {"attention": tf.fill([2, 3, 2], 0.5),
         "location_log_prob": tf.constant([[half] * 3, [0.0] * 3]),
         "sampled": tf.constant([[1.0] * 3, [0.0] * 3])}
  batch = {"mask": tf.constant([[1.0, 1, 0], [1, 1, 1]])}
  token_nll = tf.constant([[1.0, 1, 0], [2, 2, 2]])
  losses, inputs = _terms(decoder, aux, batch, token_nll)
  # Baseline 0: -lambda_r (R_0 - 0) * 2 log 0.5 / 5 words.
  assert losses["reinforce"] == pytest.approx(-(-2.0) * 2 * half / 5)
  # Entropy log 2 at each of the 5 real steps, lambda_e 0.01.
  assert losses["entropy"] == pytest.approx(-0.01 * np.log(2.0))
  halved, _ = _terms(decoder, aux, batch, token_nll, tf.constant(10.0))
  assert halved["reinforce"] == pytest.approx(losses["reinforce"] / 2)
  assert float(decoder.reward_baseline) == 0.0  # The losses leave it.

  # The hook after the step: b <- 0.9 b + 0.1 mean R over the sampled
  # captions, from the sums.
  (term,) = decoder.loss_terms()
  statistics = term.statistics(inputs)
  assert {k: float(v) for k, v in statistics.items()} == \
      {"reward": -2.0, "sampled": 1.0}
  term.update(statistics)
  assert float(decoder.reward_baseline) == pytest.approx(-0.2)
  term.update({"reward": tf.constant(-8.0),
               "sampled": tf.constant(2.0)})  # Mean -4.
  assert float(decoder.reward_baseline) == pytest.approx(0.9 * -0.2 - 0.4)
  term.update({"reward": tf.constant(0.0),
               "sampled": tf.constant(0.0)})  # None: kept.
  assert float(decoder.reward_baseline) == pytest.approx(-0.58)
  # Against the new baseline, -lambda_r (R_0 - b) * 2 log 0.5 / 5.
  assert _terms(decoder, aux, batch, token_nll)[0]["reinforce"] == \
      pytest.approx(-(-2.0 + 0.58) * 2 * half / 5)


def test_hard_per_word_reward_is_the_mean_log_likelihood():
  """The same captions as above with reward="per_word": R = (-2/2, -6/3)
  = (-1, -2); the baseline follows the per-word R."""
  decoder = _decoder("hard", reward="per_word", reinforce_weight=3.0)
  half = float(np.log(0.5))
  aux = {"attention": tf.fill([2, 3, 2], 0.5),
         "location_log_prob": tf.constant([[half] * 3, [half] * 3]),
         "sampled": tf.constant([[1.0] * 3, [1.0] * 3])}
  batch = {"mask": tf.constant([[1.0, 1, 0], [1, 1, 1]])}
  token_nll = tf.constant([[1.0, 1, 0], [2, 2, 2]])
  losses, inputs = _terms(decoder, aux, batch, token_nll)
  # -lambda_r sum_b R_b sum_t log p(s_bt) / 5 words, both sampled.
  assert losses["reinforce"] == pytest.approx(
      -3.0 * (-1.0 * 2 * half + -2.0 * 3 * half) / 5)
  (term,) = decoder.loss_terms()
  statistics = term.statistics(inputs)
  assert {k: float(v) for k, v in statistics.items()} == \
      {"reward": -3.0, "sampled": 2.0}
  term.update(statistics)
  assert float(decoder.reward_baseline) == pytest.approx(0.1 * -1.5)
  with pytest.raises(ValueError, match="reward must be"):
    _decoder("hard", reward="sentence")


def _one_hot_map(query_logits, **options):
  """A dot-score hard attention layer over one-hot features (location i's
  feature is e_i), so that alpha = softmax(query) and the context names the
  location fed on."""
  batch, locations = query_logits.shape
  layer = HardAttention(locations, score="dot", **options)
  features = tf.tile(tf.eye(locations)[None], [batch, 1, 1])
  return layer, tf.constant(query_logits, tf.float32), features


def test_hard_samples_follow_the_distribution():
  n = 4000
  probs = np.array([0.1, 0.2, 0.3, 0.4], np.float32)
  layer, query, features = _one_hot_map(np.tile(np.log(probs), [n, 1]))
  tf.random.set_seed(1)
  state = {"keys": features, "use_expectation": tf.zeros([n])}
  context, weights, extras = layer(query, features, state, training=True)
  np.testing.assert_allclose(weights[0], probs, rtol=1e-5)
  counts = tf.reduce_sum(context, 0).numpy()
  chi2 = float(np.sum((counts - n * probs) ** 2 / (n * probs)))
  assert chi2 < 11.34  # 99% quantile of chi-square, 3 degrees of freedom.
  np.testing.assert_allclose(extras["location_log_prob"],
                             np.log(probs[np.argmax(context, -1)]), rtol=1e-5)
  # Per caption, half use the expected context (expectation_prob 0.5).
  state = layer.initial_state(tf.zeros([n, 4, 4]), training=True)
  assert abs(float(tf.reduce_mean(state["use_expectation"])) - 0.5) < 0.03


def test_hard_single_location_sample_equals_expectation():
  decoder = _decoder("hard")
  one, ids = _features(locations=1), _input_ids()
  sampled, _ = decoder.teacher_forced(one, ids, training=True)
  argmax, _ = decoder.teacher_forced(one, ids, training=False)
  np.testing.assert_allclose(sampled, argmax, atol=1e-5)


@pytest.mark.parametrize("inference", ["expectation", "argmax"])
def test_hard_teacher_forced_matches_steps(inference):
  check_teacher_forced_matches_steps(_decoder("hard", inference=inference))


def test_hard_argmax_context_is_one_location():
  layer, query, features = _one_hot_map(
      10.0 * np.eye(4)[[2, 0, 3]], inference="argmax")
  state = layer.initial_state(features)
  context, _, extras = layer(query, features, state)
  np.testing.assert_array_equal(context, np.eye(4)[[2, 0, 3]])
  np.testing.assert_allclose(extras["sampled"], np.ones(3))
  np.testing.assert_allclose(extras["location_log_prob"],
                             np.log(np.max(tf.nn.softmax(query), -1)),
                             rtol=1e-5)


def test_hard_inference_feeds_the_expected_context_by_default():
  """As the authors' caption generator (and soft attention) does."""
  layer, query, features = _one_hot_map(np.log([[0.1, 0.2, 0.3, 0.4]]))
  state = layer.initial_state(features)
  context, weights, extras = layer(query, features, state)
  np.testing.assert_allclose(context, weights, rtol=1e-6)  # sum_i alpha_i e_i
  np.testing.assert_array_equal(extras["sampled"], np.zeros(1))
  np.testing.assert_array_equal(extras["location_log_prob"], np.zeros(1))


# -- Both ---------------------------------------------------------------------


def _loss(decoder, features, batch):
  """The trainer's objective (cross-entropy and the decoder's terms):
  (loss, cross-entropy, logs)."""
  inputs = objectives.LossInputs(decoder, features, batch, None,
                                 tf.reduce_sum(batch["mask"]))
  objective = objectives.Objective(
      (1.0, term) for term in [objectives.CrossEntropy()] +
      decoder.loss_terms())
  loss, logs = objective(inputs)
  return loss, logs["cross_entropy"], logs


def _batch(ids):
  return {"input_ids": ids[:, :-1], "target_ids": ids[:, 1:],
          "mask": tf.cast(ids[:, 1:] > 0, tf.float32)}


@pytest.mark.parametrize("attention,options", [
    ("soft", {}),
    ("soft", {"score": "dot"}),
    # REINFORCE alone: never the expected context, no entropy term.
    ("hard", {"expectation_prob": 0.0, "entropy_weight": 0.0}),
    ("hard", {})])
def test_gradients_reach_attention(attention, options):
  decoder = _decoder(attention, **options)
  batch = _batch(_input_ids(length=6))
  features = _features()
  decoder.teacher_forced(features, batch["input_ids"])  # Builds the weights.
  kernels = [w for w in decoder.attention.trainable_weights
             if "kernel" in w.path]
  assert kernels
  with tf.GradientTape() as tape:
    loss, _, extra = _loss(decoder, features, batch)
  grads = tape.gradient(loss, kernels)
  assert all(_nonzero(g) for g in grads), [w.path for w in kernels]
  if attention == "hard":
    assert {"reinforce", "entropy"} <= set(extra)


@pytest.mark.parametrize("attention", ["soft", "hard"])
def test_search_returns_attention(attention):
  decoder = _decoder(attention)
  features = _features(batch=2)
  beams = search.beam_search(decoder, features, beam_size=3, max_length=6)
  assert beams.attention.shape == (2, 3, 6, L)
  greedy = tf.function(lambda f: search.greedy(decoder, f, max_length=6))(
      features)
  assert greedy.attention.shape == (2, 1, 6, L)
  for result in (beams, greedy):
    steps = np.arange(6) < result.lengths.numpy()[..., None]  # [B, k, T]
    sums = tf.reduce_sum(result.attention, -1).numpy()
    np.testing.assert_allclose(sums[steps], 1.0, rtol=1e-5)
    np.testing.assert_array_equal(sums[~steps], 0.0)


@pytest.mark.parametrize("attention,limit", [("soft", 0.05), ("hard", 0.15)])
def test_overfits_a_few_captions(attention, limit):
  """Four images, one caption each: cross-entropy falls near zero."""
  decoder = _decoder(attention)
  features = _features(batch=4, seed=3)
  captions = [[1, 4, 5, 6, 7, 2, 0], [1, 4, 8, 6, 9, 10, 2],
              [1, 11, 5, 12, 2, 0, 0], [1, 13, 14, 15, 16, 17, 2]]
  batch = _batch(tf.constant(captions, tf.int32))
  optimizer = keras.optimizers.Adam(0.01)
  decoder.teacher_forced(features, batch["input_ids"])

  @tf.function
  def train_step():
    with tf.GradientTape() as tape:
      loss, xent, _ = _loss(decoder, features, batch)
    variables = decoder.trainable_variables
    optimizer.apply(tape.gradient(loss, variables), variables)
    return xent

  first = float(train_step())
  for _ in range(300):
    train_step()
  logits, _ = decoder.teacher_forced(features, batch["input_ids"])
  xent, _ = masked_cross_entropy(logits, batch["target_ids"], batch["mask"])
  assert first > 2.0 and float(xent) < limit, (first, float(xent))


@pytest.mark.parametrize("attention", ["soft", "hard"])
def test_checkpoint_round_trip(attention, tmp_path):
  """Every weight is saved, at the paths of checkpoints written before
  attention was a layer: a restored decoder gives the same logits."""
  features, ids = _features(), _input_ids()
  trained = _decoder(attention)
  logits, _ = trained.teacher_forced(features, ids)
  if attention == "hard":
    trained.reward_baseline.assign(-3.0)
  path = tf.train.Checkpoint(model=trained).write(str(tmp_path / "ckpt"))
  keras.utils.set_random_seed(1)  # Different initial weights.
  restored = ShowAttendTell(V, attention=attention, embedding_size=E,
                            hidden_size=H, dropout=0.0)
  restored.teacher_forced(features, ids)  # Builds the weights.
  tf.train.Checkpoint(model=restored).read(path).assert_consumed()
  np.testing.assert_allclose(restored.teacher_forced(features, ids)[0],
                             logits, atol=1e-6)
  saved = [k for k in tf.train.load_checkpoint(path).get_variable_to_shape_map()
           if k.startswith("model/")]
  assert len(saved) == len(trained.weights)
  paths = {k.split("/.ATTRIBUTES")[0] for k in saved}
  assert {"model/attention/feature_projection/_kernel",
          "model/attention/hidden_projection/_kernel",
          "model/attention/energy/_kernel"} <= paths
  if attention == "hard":
    assert "model/reward_baseline" in paths
    assert float(restored.reward_baseline) == -3.0


# -- The figure ---------------------------------------------------------------


def test_attention_figure_has_a_panel_per_word(tmp_path):
  image = np.random.default_rng(0).integers(0, 255, (32, 32, 3), np.uint8)
  attention = np.random.default_rng(1).dirichlet(np.ones(L), 9)  # [T, L]
  heights = []
  for count in (3, 9):
    path = str(tmp_path / f"{count}.png")
    attention_figure(image, ["w"] * count, attention, (GRID, GRID), path)
    with Image.open(path) as png:
      heights.append(png.size[1])
  assert heights[1] > heights[0]  # 4 panels fit a row; 10 need two.
  with pytest.raises(ValueError, match="locations"):
    attention_figure(image, ["w"], attention, (3, 3), path)


def test_visualize_cli_reports_bad_run_dir(tmp_path):
  result = subprocess.run(
      [sys.executable, "-m", "attention.visualize",
       f"--run_dir={tmp_path}/missing", f"--image={tmp_path}/x.png",
       f"--output={tmp_path}/out.png"],
      cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
  assert result.returncode == 2
  assert result.stderr.strip().splitlines()[-1].startswith("error: ")
  assert "run directory not found" in result.stderr
