"""Tests of the Transformer decoder: its cached steps against its parallel
pass, the causal mask, beams reordering the cache, learning, and the bounds.

Shape letters: B batch, T caption length, L locations (4x4 maps), D feature
channels, W model width (16), V vocabulary (20).
"""

import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

from attention.cached_attention import CachedMultiHeadAttention
from attention.show_attend_tell import ShowAttendTell
from attention.transformer import TransformerDecoder, sinusoids
from im2txt_ext import runs, search
from im2txt_ext.config import ExperimentConfig
from im2txt_ext.errors import InputError
from test_attention import check_teacher_forced_matches_steps
from test_models import CAPTIONS, fit_captions

V, E, W, D, L = 20, 8, 16, 6, 16


def _decoder(**options):
  keras.utils.set_random_seed(0)
  options = {"num_layers": 2, "num_heads": 4, "max_positions": 8, **options}
  return TransformerDecoder(V, embedding_size=options.pop("embedding_size", E),
                            hidden_size=W, dropout=0.0, **options)


def _features(batch=3, seed=0):
  return tf.random.stateless_normal([batch, L, D], [seed, 1])


def _input_ids(batch=3, length=6, seed=0):
  return tf.random.stateless_uniform([batch, length], [seed, 2], 3, V,
                                     tf.int32)


@pytest.mark.parametrize("options", [
    {},
    {"positions": "sinusoidal", "pooled_token": True,
     "tied_embeddings": True},
    {"location_embedding": False, "attention_block": 0, "attention_head": 1,
     "embedding_size": W, "num_layers": 1},
])
def test_cached_steps_give_the_parallel_logits(options):
  logits, aux, state = check_teacher_forced_matches_steps(
      _decoder(**options), _features(), _input_ids())
  assert logits.shape == (3, 6, V) and aux["attention"].shape == (3, 6, L)
  np.testing.assert_array_equal(state["position"], [6, 6, 6])
  if not options.get("pooled_token"):  # Weights over L locations sum to 1.
    np.testing.assert_allclose(tf.reduce_sum(aux["attention"], -1),
                               np.ones([3, 6]), rtol=1e-5)


def test_tied_embeddings_leave_no_layer_unbuilt():
  """Tied, the decoder has no output kernel of its own and nothing unbuilt
  (its untied output layer once stayed unbuilt, and Keras warned so)."""
  decoder = _decoder(tied_embeddings=True)
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    runs.build_from_batch(decoder, {"features": _features(),
                                    "input_ids": _input_ids()})
  assert not [w for w in caught if "unbuilt" in str(w.message)]
  paths = [w.path for w in decoder.weights]
  assert any(p.endswith("logits/projection/kernel") for p in paths), paths
  assert not any(p.endswith("logits/kernel") for p in paths), paths


def test_the_step_loop_of_the_base_class_agrees():
  """Scheduled sampling runs the base class's step loop: with probability
  0 it is teacher forcing."""
  decoder = _decoder()
  features, ids = _features(), _input_ids()
  fused, _ = decoder.teacher_forced(features, ids)
  stepped, _ = decoder.sampled_forward(features, ids, 0.0, training=False)
  np.testing.assert_allclose(stepped, fused, atol=1e-5)


def test_later_words_leave_earlier_logits_unchanged():
  decoder = _decoder()
  features, ids = _features(), _input_ids()
  logits, _ = decoder.teacher_forced(features, ids)
  for t in range(ids.shape[1] - 1):
    changed = tf.concat([ids[:, :t + 1], (ids[:, t + 1:] + 5) % V], axis=1)
    again, _ = decoder.teacher_forced(features, changed)
    np.testing.assert_allclose(again[:, :t + 1], logits[:, :t + 1],
                               atol=1e-5)
    assert np.abs(again[:, t + 1] - logits[:, t + 1]).max() > 1e-4


def test_reordered_cache_rows_follow_their_beams():
  """After two steps the rows are reordered as a beam search reorders
  them (row 0 <- 2, 1 <- 0, 2 <- 0); the third step's logits are those of
  the parallel pass over each row's new history."""
  decoder = _decoder()
  features, ids = _features(), _input_ids(length=3)
  state = decoder.initial_state(features)
  for t in range(2):
    state = decoder.step(ids[:, t], state).state
  parents = tf.constant([2, 0, 0])
  state = tf.nest.map_structure(lambda x: tf.gather(x, parents), state)
  last = tf.constant([5, 6, 7])
  out = decoder.step(last, state)
  history = tf.concat([tf.gather(ids[:, :2], parents), last[:, None]], 1)
  logits, aux = decoder.teacher_forced(tf.gather(features, parents), history)
  np.testing.assert_allclose(out.logits, logits[:, 2], atol=1e-5)
  np.testing.assert_allclose(out.attention, aux["attention"][:, 2],
                             atol=1e-6)


def test_cached_attention_is_keras_attention():
  layer = CachedMultiHeadAttention(2, 3)
  query = tf.random.stateless_normal([2, 4, 5], [0, 1])
  memory = tf.random.stateless_normal([2, 7, 5], [0, 2])
  want, want_weights = layer(query, memory, return_attention_scores=True)
  got, weights = layer.attend(query, *layer.project(memory),
                              return_weights=True)
  np.testing.assert_allclose(got, want, atol=1e-6)
  np.testing.assert_allclose(weights, want_weights, atol=1e-6)


def test_sinusoids_golden():
  table = sinusoids(3, 4)  # rates 1 and 1/100 for i = 0, 1.
  np.testing.assert_allclose(table[2], [np.sin(2.0), np.cos(2.0),
                                        np.sin(0.02), np.cos(0.02)],
                             rtol=1e-6)
  np.testing.assert_array_equal(table[0], [0, 1, 0, 1])


def test_a_tiny_model_learns_its_captions():
  """Four images, one caption each: after training, greedy search returns
  each image's caption."""
  decoder = _decoder()
  features = _features(batch=4, seed=3)
  first, last = fit_captions(decoder, features, CAPTIONS, steps=60,
                             learning_rate=1e-2)
  assert last < 0.05 * first
  result = search.greedy(decoder, features, max_length=6)
  for row, caption in zip(result.ids.numpy().reshape([4, -1]), CAPTIONS):
    words = caption[1:caption.index(2) + 1]  # Without <start>.
    assert list(row[:len(words)]) == words


def test_bounds_and_bad_options():
  decoder = _decoder(max_positions=8)
  assert search.longest_caption(decoder) == 8
  with pytest.raises(ValueError, match=r"max length must be in 1\.\.8, "
                     "got 9"):
    search.beam_search(decoder, _features(), beam_size=2, max_length=9)
  with pytest.raises(ValueError, match=r"max length must be in 1\.\.8"):
    search.greedy(decoder, _features(), max_length=9)
  search.greedy(decoder, _features(), max_length=8)  # The whole cache.
  for options, message in [
      ({"num_heads": 3}, "num_heads must divide the model width"),
      ({"positions": "rotary"}, "positions must be one of"),
      ({"attention_block": 2}, r"attention_block must be in -2\.\.1"),
      ({"attention_head": 4}, r"attention_head must be in 0\.\.3"),
      ({"num_layers": 0}, "num_layers must be >= 1")]:
    with pytest.raises(ValueError, match=message):
      _decoder(**options)
  config = ExperimentConfig()
  config.model.decoder = "transformer"
  config.model.decoder_options = {"max_positions": 20}
  with pytest.raises(InputError, match="steps at most 20 words"):
    runs.build_decoder(config, V, with_encoder=False)


@pytest.mark.parametrize("make", [
    _decoder, lambda: ShowAttendTell(V, embedding_size=E, hidden_size=W,
                                     dropout=0.0)])
def test_beam_search_leaves_static_state_as_it_is(make, monkeypatch):
  """The image's memory (features, keys) is the same for all its beams,
  so not reordering it changes no caption or score."""
  decoder = make()
  features = _features()
  assert decoder.static_state
  want = search.beam_search(decoder, features, beam_size=3, max_length=6,
                            top_k=3)
  monkeypatch.setattr(type(decoder), "static_state", ())
  got = search.beam_search(decoder, features, beam_size=3, max_length=6,
                           top_k=3)
  np.testing.assert_array_equal(got.ids, want.ids)
  np.testing.assert_allclose(got.log_probs, want.log_probs, atol=1e-5)
  np.testing.assert_allclose(got.attention, want.attention, atol=1e-6)
