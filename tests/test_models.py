"""The no-attention decoders: shapes, parameter counts, step/sequence
agreement, masking and overfitting a handful of captions."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from im2txt_ext.models import decoder_class, word_inputs
from im2txt_ext.models.rnn_baseline import RNNBaseline
from im2txt_ext.models.show_and_tell import ShowAndTell
from im2txt_ext.training import distribute
from im2txt_ext.training.losses import masked_cross_entropy

V, E, H, D, B, T = 20, 8, 6, 5, 3, 7


def _inputs(seed=0):
  rng = np.random.default_rng(seed)
  return (tf.constant(rng.normal(size=(B, D)), tf.float32),
          tf.constant(rng.integers(3, V, (B, T)), tf.int32))


def _num_params(model):
  return sum(int(np.prod(v.shape)) for v in model.trainable_variables)


DECODERS = [(ShowAndTell, "lstm"), (ShowAndTell, "gru"), (RNNBaseline, "rnn"),
            (RNNBaseline, "lstm"), (RNNBaseline, "gru")]


@pytest.mark.parametrize("cls,cell", DECODERS)
def test_output_shapes_and_step_agrees_with_sequence(cls, cell):
  decoder = cls(V, embedding_size=E, hidden_size=H, dropout=0.0, cell=cell)
  features, ids = _inputs()
  fused, aux = decoder.teacher_forced(features, ids)
  stepped, _ = decoder.sampled_forward(features, ids, 0.0, False)
  assert fused.shape == (B, T, V) and aux == {}
  np.testing.assert_allclose(fused.numpy(), stepped.numpy(), atol=1e-5)
  out = decoder.step(ids[:, 0], decoder.initial_state(features))
  assert out.logits.shape == (B, V) and out.attention is None


@pytest.mark.parametrize("cell", [
    keras.layers.LSTMCell(H), keras.layers.GRUCell(H),
    keras.layers.GRUCell(H, reset_after=False),
    keras.layers.GRUCell(H, use_bias=False), keras.layers.SimpleRNNCell(H),
    keras.layers.LSTMCell(H, use_bias=False)], ids=lambda c: c.name)
def test_precomputed_input_step_is_the_keras_cell(cell):
  rng = np.random.default_rng(1)
  embeddings = tf.constant(rng.normal(size=(V, E)), tf.float32)
  words = tf.constant([3, 0, 17], tf.int32)
  state = [tf.constant(rng.normal(size=(B, H)), tf.float32)
           for _ in range(2 if isinstance(cell, keras.layers.LSTMCell)
                          else 1)]
  cell(tf.gather(embeddings, words), state)  # Builds it.
  for w in cell.weights:  # Non-zero biases, so that they are checked too.
    w.assign(rng.normal(size=w.shape) * 0.5)
  expected_h, expected_state = cell(tf.gather(embeddings, words), state)
  table = word_inputs.project_vocabulary(embeddings, cell)
  zeros = [tf.zeros_like(s) for s in state]
  expected_from_zero = cell(tf.gather(embeddings, words), zeros)
  for given, expected in ((state, (expected_h, expected_state)),
                          (None, expected_from_zero)):  # None: zero state.
    h, new_state = word_inputs.cell_step(cell, tf.gather(table, words),
                                         given)
    np.testing.assert_allclose(h, expected[0], atol=1e-5)
    assert len(new_state) == len(state)
    for got, want in zip(new_state, expected[1]):
      np.testing.assert_allclose(got, want, atol=1e-5)


def _steps(decoder, features, ids):
  """Logits [B, T, V] of ``decoder``'s steps fed ``ids`` (inference)."""
  state, logits = decoder.initial_state(features), []
  for t in range(ids.shape[1]):
    out = decoder.step(ids[:, t], state)
    state = out.state
    logits.append(out.logits)
  return tf.stack(logits, axis=1)


@pytest.mark.parametrize("cls,cell", DECODERS)
def test_precomputed_word_inputs_give_the_same_steps(cls, cell):
  decoder = cls(V, embedding_size=E, hidden_size=H, dropout=0.5, cell=cell)
  features, ids = _inputs()
  fused, _ = decoder.teacher_forced(features, ids)
  trainable = [v.path for v in decoder.trainable_variables]
  fast = word_inputs.for_inference(decoder)
  assert isinstance(fast, word_inputs.PrecomputedWordInputs)
  assert fast.table.shape[0] == V and not fast.table.trainable
  # Outside the model: the decoder's variables are unchanged.
  assert [v.path for v in decoder.trainable_variables] == trainable
  np.testing.assert_allclose(_steps(fast, features, ids), fused, atol=1e-5)
  # A snapshot: new weights need a new wrapper; the decoder never reads it.
  embedding = decoder.word_embedding.embeddings
  embedding.assign(embedding * 2.0)
  fused, _ = decoder.teacher_forced(features, ids)
  assert not np.allclose(_steps(fast, features, ids), fused, atol=1e-3)
  np.testing.assert_allclose(_steps(decoder, features, ids), fused,
                             atol=1e-5)
  np.testing.assert_allclose(
      _steps(word_inputs.for_inference(decoder), features, ids), fused,
      atol=1e-5)


@pytest.mark.parametrize("precision", ["mixed_bfloat16", "mixed_float16"])
def test_precomputed_word_inputs_under_mixed_precision(precision):
  with distribute.precision_scope(precision):
    decoder = ShowAndTell(V, embedding_size=E, hidden_size=H, dropout=0.0)
  features, ids = _inputs()
  fused, _ = decoder.teacher_forced(features, ids)
  fast = word_inputs.for_inference(decoder)
  assert fast.table.dtype == decoder.rnn.cell.compute_dtype != tf.float32
  stepped = _steps(fast, features, ids)
  assert stepped.dtype == tf.float32
  np.testing.assert_allclose(fused, stepped, atol=3e-2)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_show_and_tell_inference_image_step_is_the_keras_cell(cell):
  decoder = ShowAndTell(V, embedding_size=E, hidden_size=H, dropout=0.0,
                        cell=cell)
  features, _ = _inputs()
  built = decoder.initial_state(features)  # Keras's cell, to build it.
  for w in decoder.rnn.cell.weights:  # Non-zero biases are checked too.
    w.assign(np.random.default_rng(2).normal(size=w.shape) * 0.5)
  keras_cell = decoder.initial_state(features, training=True)["cell"]
  shortcut = decoder.initial_state(features)["cell"]  # No h W_h.
  assert len(shortcut) == len(keras_cell) == len(built["cell"])
  for got, want in zip(shortcut, keras_cell):
    np.testing.assert_allclose(got, want, atol=1e-5)


@pytest.mark.parametrize("image_dropout,image_varies", [(None, True),
                                                         (0.0, False)])
def test_show_and_tell_image_dropout(image_dropout, image_varies):
  decoder = ShowAndTell(V, embedding_size=E, hidden_size=H, dropout=0.5,
                        image_dropout=image_dropout)
  features, ids = _inputs()
  states = [decoder.initial_state(features, training=True)["cell"][0]
            for _ in range(2)]
  assert (not np.allclose(*states)) == image_varies
  embedded = [decoder.embed(ids, training=True) for _ in range(2)]
  assert not np.allclose(*embedded)  # Words keep ``dropout``.


def test_show_and_tell_parameter_count():
  decoder = ShowAndTell(V, embedding_size=E, hidden_size=H, dropout=0.0)
  decoder.teacher_forced(*_inputs())
  expected = (V * E  # word embedding
              + D * E + E  # image embedding
              + (E + H + 1) * 4 * H  # LSTM (im2txt's formula)
              + H * V + V)  # logits
  assert _num_params(decoder) == expected


@pytest.mark.parametrize("embedding_size", [E, H])
def test_tied_embeddings_share_the_word_embedding(embedding_size):
  """Press and Wolf (2017): logits = (h P) W_e^T + b, P only where H != E;
  no [H, V] output kernel, and the output's gradient reaches W_e."""
  decoder = ShowAndTell(V, embedding_size=embedding_size, hidden_size=H,
                        dropout=0.0, tied_embeddings=True)
  decoder.teacher_forced(*_inputs())
  projection = 0 if embedding_size == H else H * embedding_size
  assert _num_params(decoder) == (
      V * embedding_size + D * embedding_size + embedding_size
      + (embedding_size + H + 1) * 4 * H + projection + V)

  hidden = tf.random.stateless_normal([B, H], [0, 1])
  layer = decoder.logits_layer
  layer.bias.assign(tf.range(V, dtype=tf.float32) / V)
  projected = hidden if layer.projection is None else hidden @ \
      layer.projection.kernel
  np.testing.assert_allclose(
      decoder.output_logits(hidden),
      projected @ tf.transpose(decoder.word_embedding.embeddings)
      + layer.bias, atol=1e-5)
  with tf.GradientTape() as tape:
    logits = decoder.output_logits(hidden)
    loss = tf.reduce_sum(tf.nn.log_softmax(logits)[:, 5])
  gradient = tape.gradient(loss, decoder.word_embedding.embeddings)
  assert np.abs(tf.convert_to_tensor(gradient).numpy()).sum(1).min() > 0


def test_rnn_baseline_parameter_count_and_image_in_output():
  decoder = RNNBaseline(V, embedding_size=E, hidden_size=H, dropout=0.0)
  features, ids = _inputs()
  logits, _ = decoder.teacher_forced(features, ids)
  expected = (V * E + (E + H + 1) * H  # embedding, W_s, W_h and bias
              + H * V + V  # L_h
              + D * V)  # L_I
  assert _num_params(decoder) == expected
  # p(S_t | I, h_t): the image's logits L_I I enter every step equally.
  other, _ = decoder.teacher_forced(features * 2.0, ids)
  shift = (other - logits).numpy()
  np.testing.assert_allclose(shift, np.broadcast_to(shift[:, :1], shift.shape),
                             atol=1e-5)


def test_padding_does_not_change_earlier_logits():
  decoder = ShowAndTell(V, embedding_size=E, hidden_size=H, dropout=0.0)
  features, ids = _inputs()
  padded = tf.concat([ids, tf.zeros([B, 4], tf.int32)], 1)
  a, _ = decoder.teacher_forced(features, ids)
  b, _ = decoder.teacher_forced(features, padded)
  np.testing.assert_allclose(a.numpy(), b.numpy()[:, :T], atol=1e-5)


def test_masked_cross_entropy_ignores_padding():
  logits = tf.random.normal([2, 3, V])
  targets = tf.constant([[4, 5, 0], [6, 0, 0]])
  mask = tf.constant([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
  loss, token_nll = masked_cross_entropy(logits, targets, mask)
  log_probs = tf.nn.log_softmax(logits).numpy()
  expected = -(log_probs[0, 0, 4] + log_probs[0, 1, 5] + log_probs[1, 0, 6]) / 3
  assert float(loss) == pytest.approx(expected, rel=1e-5)
  assert token_nll.numpy()[0, 2] == 0 and token_nll.numpy()[1, 1] == 0
  changed = tf.tensor_scatter_nd_update(logits, [[1, 2, 0]], [100.0])
  assert float(masked_cross_entropy(changed, targets, mask)[0]) == \
      pytest.approx(float(loss), rel=1e-6)


def test_frozen_embeddings_are_not_trained():
  decoder = ShowAndTell(V, embedding_size=E, hidden_size=H,
                        freeze_embeddings=True)
  decoder.teacher_forced(*_inputs())
  names = [v.path for v in decoder.trainable_variables]
  assert not any("word_embedding" in n for n in names)
  assert any("word_embedding" in v.path for v in decoder.variables)


def test_decoder_names():
  assert decoder_class("show_and_tell") is ShowAndTell
  assert decoder_class("rnn_baseline") is RNNBaseline
  with pytest.raises(ValueError, match="unknown decoder 'nope'"):
    decoder_class("nope")


@pytest.mark.parametrize("cls,cell", [(ShowAndTell, "lstm"),
                                      (RNNBaseline, "rnn")])
def test_tiny_model_overfits_a_few_captions(cls, cell):
  tf.keras.utils.set_random_seed(0)
  decoder = cls(V, embedding_size=16, hidden_size=32, dropout=0.0, cell=cell)
  features = tf.constant(np.eye(4, D), tf.float32)
  first, loss = fit_captions(decoder, features, CAPTIONS, steps=300,
                             learning_rate=0.02)
  assert first > 2.0 and loss < 0.05


# Four captions from <start> (1), ending with <end> (2), padded with 0.
CAPTIONS = [[1, 4, 5, 6, 2], [1, 7, 8, 2, 0], [1, 9, 5, 10, 2],
            [1, 11, 2, 0, 0]]


def fit_captions(decoder, features, captions, steps, learning_rate):
  """Adam on teacher-forced cross-entropy over one batch of ``captions``
  (int [B, T] from <start>); returns (first loss, last loss)."""
  captions = tf.constant(captions)
  inputs, targets = captions[:, :-1], captions[:, 1:]
  mask = tf.cast(targets != 0, tf.float32)
  optimizer = tf.keras.optimizers.Adam(learning_rate)

  @tf.function
  def train_step():
    with tf.GradientTape() as tape:
      logits, _ = decoder.teacher_forced(features, inputs, training=True)
      loss, _ = masked_cross_entropy(logits, targets, mask)
    grads = tape.gradient(loss, decoder.trainable_variables)
    optimizer.apply(grads, decoder.trainable_variables)
    return loss

  first = float(train_step())
  for _ in range(steps - 1):
    loss = float(train_step())
  return first, loss
