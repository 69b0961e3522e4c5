"""Precomputed word inputs: a faster inference step for word-fed decoders.

When the RNN's input at a step is the word embedding W_e S_t (Show and
Tell's eq. 11, the RNN baseline's W_s S_t), its input projection
W_x W_e S_t + b takes one of only V values. ``project_vocabulary``
computes all of them once, a [V, G] table (G = 4H for an LSTM, 3H for a
GRU, H for a vanilla cell), and ``cell_step`` runs the cell from a row of
it, so an inference step does one matmul fewer (h W_h and the output layer
are left). On a CPU a step over one image's few beams is bound by reading
the weights, and the lookup saves a quarter to a third of its time
(docs/export_and_serving.md). ``PrecomputedWordInputs`` wraps a trained
``WordFedDecoder`` (Show and Tell, the RNN baseline) so: the decoder-step
contract for the searches, outside the model, which the Captioner and the
export use (``for_inference``).

The equations are those of Keras's LSTMCell (gates i, f, c, o), GRUCell
(gates z, r, h; ``reset_after`` or not) and SimpleRNNCell; the tests check
``cell_step`` against the Keras cells. Training does not use this: dropout
on the embedding needs the embedding itself.
"""

import keras
import tensorflow as tf

from im2txt_ext.models.decoder import WordFedDecoder
from im2txt_ext.models.ensemble import Ensemble


def _input_bias(cell):
  """The bias added to the input projection, or None."""
  if not cell.use_bias:
    return None
  if isinstance(cell, keras.layers.GRUCell) and cell.reset_after:
    return cell.bias[0]  # bias[1] goes with the recurrent projection.
  return cell.bias


def input_projection(cell, inputs):
  """x W_x + b of a Keras RNN cell: inputs [..., I] -> [..., G], in the
  inputs' dtype."""
  dtype = inputs.dtype
  projected = tf.matmul(inputs, tf.cast(tf.convert_to_tensor(cell.kernel),
                                        dtype))
  bias = _input_bias(cell)
  if bias is not None:
    projected += tf.cast(tf.convert_to_tensor(bias), dtype)
  return projected


def project_vocabulary(embeddings, cell):
  """Every word's input projection: embeddings [V, E] -> x W_x + b [V, G],
  computed in float32, in the cell's compute dtype."""
  return tf.cast(input_projection(
      cell, tf.convert_to_tensor(embeddings, tf.float32)), cell.compute_dtype)


def cell_step(cell, projected, state=None):
  """One step of a Keras LSTMCell, GRUCell or SimpleRNNCell whose input
  projection x W_x + b is given: projected [B, G], state [h] or [h, c]
  (None: the zero state) -> (output h [B, H], new state list), as
  ``cell(x, state)`` returns."""
  dtype = projected.dtype
  recurrent_kernel = tf.cast(tf.convert_to_tensor(cell.recurrent_kernel),
                             dtype)
  act, gate = cell.activation, getattr(cell, "recurrent_activation", None)
  zero_state = state is None
  if zero_state:
    zeros = tf.zeros_like(projected[..., :cell.units])
    state = [zeros, zeros] if isinstance(cell, keras.layers.LSTMCell) else \
        [zeros]

  def recurrent(x, kernel):
    """x W for x made from the previous state: 0 from the zero state."""
    if zero_state:
      return tf.zeros_like(projected[..., :kernel.shape[-1]])
    return tf.matmul(x, kernel)

  h = state[0]
  if isinstance(cell, keras.layers.LSTMCell):
    i, f, g, o = tf.split(projected + recurrent(h, recurrent_kernel), 4, -1)
    c = gate(f) * state[1] + gate(i) * act(g)
    h = gate(o) * act(c)
    return h, [h, c]
  if isinstance(cell, keras.layers.GRUCell):
    units = cell.units
    x_z, x_r, x_h = tf.split(projected, 3, -1)
    if cell.reset_after:
      inner = recurrent(h, recurrent_kernel)
      if cell.use_bias:
        inner += tf.cast(tf.convert_to_tensor(cell.bias[1]), dtype)
      r_z, r_r, r_h = tf.split(inner, 3, -1)
    else:
      r_z, r_r = tf.split(recurrent(h, recurrent_kernel[:, :2 * units]), 2,
                          -1)
    z, r = gate(x_z + r_z), gate(x_r + r_r)
    recurrent_h = r * r_h if cell.reset_after else recurrent(
        r * h, recurrent_kernel[:, 2 * units:])
    h = z * h + (1 - z) * act(x_h + recurrent_h)
    return h, [h]
  if isinstance(cell, keras.layers.SimpleRNNCell):
    h = act(projected + recurrent(h, recurrent_kernel))
    return h, [h]
  raise TypeError(f"no precomputed-input step for {type(cell).__name__}")


class PrecomputedWordInputs(tf.Module):
  """A trained WordFedDecoder for inference, stepping its cell from a table
  of every word's input projection (a snapshot of the weights, made once).

  It has the decoder-step contract (``initial_state``, ``step``, and the
  attributes the searches read), so the searches and the export run it as
  they run the decoder; steps are in inference mode (no dropout).

  Args:
    decoder: a built WordFedDecoder that will not train again.
  """

  def __init__(self, decoder):
    super().__init__(name="precomputed_word_inputs")
    if not (decoder.word_embedding.built and decoder.rnn.cell.built):
      raise ValueError("build the decoder before precomputing word inputs")
    self.decoder = decoder
    # [V, G] in the cell's compute dtype.
    self.table = tf.Variable(project_vocabulary(
        decoder.word_embedding.embeddings, decoder.rnn.cell),
                             trainable=False, name="word_input_table")
    self.vocab_size = decoder.vocab_size
    self.has_attention = decoder.has_attention
    self.static_state = decoder.static_state

  def initial_state(self, features, training=False):
    del training
    return self.decoder.initial_state(features)

  def step(self, word_ids, state, training=False):
    del training
    hidden, cell_state = cell_step(self.decoder.rnn.cell,
                                   tf.gather(self.table, word_ids),
                                   state["cell"])
    return self.decoder.emit(hidden, cell_state, state)


def for_inference(decoder):
  """The decoder as the searches should run it for inference: wrapped in
  PrecomputedWordInputs where it is a WordFedDecoder, else itself; an
  ensemble of its members' so."""
  if isinstance(decoder, Ensemble):
    return Ensemble([for_inference(member) for member in decoder.members])
  if isinstance(decoder, WordFedDecoder):
    return PrecomputedWordInputs(decoder)
  return decoder
