"""Precomputed word inputs: faster inference steps for RNNs fed the words.

When the RNN's input at a step is the word embedding W_e S_t (Show and
Tell's eq. 11, the RNN baseline's W_s S_t), its input projection
W_x W_e S_t + b takes one of only V values. ``project_vocabulary``
computes all of them once, a [V, G] table (G = 4H for an LSTM, 3H for a
GRU, H for a vanilla cell), and ``cell_step`` runs the cell from a row of
it, so an inference step does one matmul fewer (h W_h and the output layer
are left). On a CPU a step over one image's few beams is bound by reading
the weights, and the lookup saves a quarter to a third of its time
(README, "Export and serve").

The equations are those of Keras's LSTMCell (gates i, f, c, o), GRUCell
(gates z, r, h; ``reset_after`` or not) and SimpleRNNCell; the tests check
``cell_step`` against the Keras cells. Training does not use this: dropout
on the embedding needs the embedding itself.
"""

import keras
import tensorflow as tf


def _input_bias(cell):
  """The bias added to the input projection, or None."""
  if not cell.use_bias:
    return None
  if isinstance(cell, keras.layers.GRUCell) and cell.reset_after:
    return cell.bias[0]  # bias[1] goes with the recurrent projection.
  return cell.bias


def project_vocabulary(embeddings, cell):
  """Every word's input projection: embeddings [V, E] -> x W_x + b [V, G],
  computed in float32, in the cell's compute dtype."""
  table = tf.matmul(tf.convert_to_tensor(embeddings, tf.float32),
                    tf.convert_to_tensor(cell.kernel, tf.float32))
  bias = _input_bias(cell)
  if bias is not None:
    table += tf.convert_to_tensor(bias, tf.float32)
  return tf.cast(table, cell.compute_dtype)


def cell_step(cell, projected, state):
  """One step of a Keras LSTMCell, GRUCell or SimpleRNNCell whose input
  projection x W_x + b is given: projected [B, G], state [h] or [h, c] ->
  (output h [B, H], new state list), as ``cell(x, state)`` returns."""
  dtype = projected.dtype
  recurrent_kernel = tf.cast(tf.convert_to_tensor(cell.recurrent_kernel),
                             dtype)
  act, gate = cell.activation, getattr(cell, "recurrent_activation", None)
  h = state[0]
  if isinstance(cell, keras.layers.LSTMCell):
    i, f, g, o = tf.split(projected + tf.matmul(h, recurrent_kernel), 4, -1)
    c = gate(f) * state[1] + gate(i) * act(g)
    h = gate(o) * act(c)
    return h, [h, c]
  if isinstance(cell, keras.layers.GRUCell):
    units = cell.units
    x_z, x_r, x_h = tf.split(projected, 3, -1)
    if cell.reset_after:
      inner = tf.matmul(h, recurrent_kernel)
      if cell.use_bias:
        inner += tf.cast(tf.convert_to_tensor(cell.bias[1]), dtype)
      r_z, r_r, r_h = tf.split(inner, 3, -1)
    else:
      r_z, r_r = tf.split(tf.matmul(h, recurrent_kernel[:, :2 * units]), 2,
                          -1)
    z, r = gate(x_z + r_z), gate(x_r + r_r)
    recurrent_h = r * r_h if cell.reset_after else tf.matmul(
        r * h, recurrent_kernel[:, 2 * units:])
    h = z * h + (1 - z) * act(x_h + recurrent_h)
    return h, [h]
  if isinstance(cell, keras.layers.SimpleRNNCell):
    h = act(projected + tf.matmul(h, recurrent_kernel))
    return h, [h]
  raise TypeError(f"no precomputed-input step for {type(cell).__name__}")
