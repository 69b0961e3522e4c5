"""Soft ("deterministic") attention of Show, Attend and Tell (Xu et al. 2015).

Shape letters: B batch, T caption length, L image locations, D feature
channels, E embedding size, H hidden units, V vocabulary.

At step t, with h_{t-1} the previous LSTM state and a_i the L annotation
vectors of the image:
  e_ti = f_att(a_i, h_{t-1})                              (eq. 4)
  alpha_ti = softmax_i(e_ti)                              (eq. 5)
  z_t = beta_t * sum_i alpha_ti a_i,                      (eq. 6, sec. 4.2.1)
    beta_t = sigmoid(f_beta(h_{t-1})) when ``gating``, else 1;
  h_t = LSTM([E y_{t-1}; z_t], h_{t-1})                   (eq. 1-3)
  p(y_t | a, y_{<t}) = softmax(L_o(tanh(E y_{t-1} + L_h h_t + L_z z_t)))
    with ``deep_output`` (eq. 7; the tanh is the authors' code), else
    softmax(L_o [h_t; z_t]).
L_o is the base class's shared output layer. h_0, c_0 are f_init(mean_i a_i)
with ``init_from_mean`` (sec. 3.1.2), else zeros. Training may add the
doubly stochastic penalty of eq. 14, per caption as there:

  L_d = -log p(y | a) + lambda * sum_i (1 - sum_t alpha_ti)^2      (eq. 14)

summed over the batch and divided by N, its real words, the trainer's
per-word cross-entropy's divisor; so lambda weighs the penalty against the
caption's log-likelihood as in the paper and the authors' code.
"""

import keras
import tensorflow as tf

from attention.scoring import build_scoring
from im2txt_ext.models.decoder import CaptionDecoder, StepOutput
from im2txt_ext.models.decoder import make_rnn


@keras.saving.register_keras_serializable(package="attention")
class SoftAttentionDecoder(CaptionDecoder):
  """Show, Attend and Tell with soft attention over spatial features.

  Reads the encoder's "spatial" output [B, L, D]. Besides CaptionDecoder's
  arguments (``decoder_options`` in the config):

  Args:
    score: str. Scoring function, "additive" (Xu et al.'s MLP, eq. 4) or
      "dot" (a_i^T W h). Defaults to "additive".
    attention_size: int or None. Width of the additive MLP. Defaults to
      hidden_size.
    init_from_mean: bool. Initial h, c = tanh(Dense(mean_i a_i)), separate
      weights for each (f_init,h and f_init,c of sec. 3.1.2); False: zeros.
      Defaults to True.
    gating: bool. Scale the context by beta = sigmoid(f_beta(h_{t-1}))
      (sec. 4.2.1). Defaults to True.
    deep_output: bool. Output layer of eq. 7; False: logits from [h_t; z_t].
      Defaults to True.
    doubly_stochastic: float. lambda of eq. 14 (on its scale, see the
      module doc); 0 = off. Defaults to 1.0 (the paper's value). Since
      sum_i sum_t alpha_ti = T, a caption's penalty is at least
      L (1 - T/L)^2 when T < L (about 47 for 64 locations and T = 9, 5.3
      a word): the logged loss has that floor.

  Reference: Xu et al., "Show, Attend and Tell: Neural Image Caption
  Generation with Visual Attention", ICML 2015.
  """

  feature_kind = "spatial"
  has_attention = True
  static_state = ("features", "keys")
  # Per-step tensors that teacher_forced stacks to [B, T, ...].
  _records = ("hidden", "context", "attention")

  def __init__(self, vocab_size, score="additive", attention_size=None,
               init_from_mean=True, gating=True, deep_output=True,
               doubly_stochastic=1.0, **kwargs):
    super().__init__(vocab_size, **kwargs)
    self.score = score
    self.attention_size = attention_size
    self.init_from_mean = init_from_mean
    self.gating = gating
    self.deep_output = deep_output
    self.doubly_stochastic = doubly_stochastic
    # Stages in order: initial state, attention, recurrence, output.
    self.state_count = 2 if self.cell_type == "lstm" else 1  # [h, c] or [h]
    # f_init,h and f_init,c side by side in one layer (not a list of layers:
    # tf.train.Checkpoint does not save Keras layers held in a list).
    self.init_state = keras.layers.Dense(
        self.state_count * self.hidden_size, activation="tanh",
        name="init_state") if init_from_mean else None
    self.attention = build_scoring(score, self.hidden_size,
                                   attention_size or self.hidden_size)
    self.gate = keras.layers.Dense(1, activation="sigmoid",
                                   name="gate") if gating else None
    # Only the cell: the steps are run here, one at a time.
    self.cell = make_rnn(self.cell_type, self.hidden_size).cell
    if deep_output:  # L_h and L_z of eq. 7, into the embedding space.
      self.deep_hidden = keras.layers.Dense(self.embedding_size,
                                            name="deep_hidden")
      self.deep_context = keras.layers.Dense(self.embedding_size,
                                             use_bias=False,
                                             name="deep_context")

  def get_config(self):
    config = super().get_config()
    config.update(score=self.score, attention_size=self.attention_size,
                  init_from_mean=self.init_from_mean, gating=self.gating,
                  deep_output=self.deep_output,
                  doubly_stochastic=self.doubly_stochastic)
    return config

  # -- The contract ----------------------------------------------------------

  def initial_state(self, features, training=False):
    """features [B, L, D] -> {"cell": [h, c] each [B, H], "features": [B, L, D],
    "keys": [B, L, K]}; the keys are the image's part of the score. The
    state is in the layers' compute dtype (16 bits under mixed precision)."""
    features = tf.cast(features, self.compute_dtype)
    if self.init_from_mean:
      mean = tf.reduce_mean(features, axis=1)  # [B, D]
      cell = tf.split(self.init_state(mean), self.state_count, axis=-1)
    else:
      cell = [tf.zeros([tf.shape(features)[0], self.hidden_size],
                       self.compute_dtype)] * self.state_count
    return {"cell": cell, "features": features,
            "keys": self.attention.keys(features)}

  def step(self, word_ids, state, training=False):
    embedded = self.embed(word_ids, training)  # [B, E]
    record, state = self._recur(embedded, state, training)
    logits = self._output(embedded, record["hidden"], record["context"],
                          training)
    return StepOutput(logits, state, tf.cast(record["attention"], tf.float32))

  def teacher_forced(self, features, input_ids, training=False):
    """The step loop with the output layer taken out of it: the recurrence
    runs per step, then one output matmul covers all T steps.

    Returns (logits float32 [B, T, V], aux) with aux["attention"] [B, T, L]
    (and, for subclasses, their other per-step records, each [B, T, ...]).
    """
    embedded = self.embed(input_ids, training)  # [B, T, E]
    length = tf.shape(input_ids)[1]
    state = self.initial_state(features, training)
    arrays = {name: tf.TensorArray(self.compute_dtype, size=length)
              for name in self._records}

    def body(t, state, arrays):
      record, state = self._recur(embedded[:, t], state, training)
      return t + 1, state, {name: array.write(t, record[name])
                            for name, array in arrays.items()}
    # A while_loop, not autograph, so that Keras can also trace it
    # symbolically when it builds the model.
    # maximum_iterations: XLA needs the bound to differentiate the loop.
    _, _, arrays = tf.while_loop(lambda t, *_: t < length, body,
                                 (tf.constant(0), state, arrays),
                                 maximum_iterations=length)
    stacked = {name: _batch_major(array.stack())
               for name, array in arrays.items()}
    logits = self._output(embedded, stacked.pop("hidden"),
                          stacked.pop("context"), training)
    return logits, {k: tf.cast(v, tf.float32) for k, v in stacked.items()}

  def auxiliary_losses(self, aux, batch, token_nll, num_words=None):
    """{"doubly_stochastic": lambda * sum_b sum_i (1 - sum_t alpha_bti)^2 / N}
    (eq. 14 over the batch), t over real (unmasked) steps, N = num_words."""
    del token_nll
    if not self.doubly_stochastic:
      return {}
    penalty = doubly_stochastic_penalty(aux["attention"], batch["mask"])
    return {"doubly_stochastic": self.doubly_stochastic * tf.reduce_sum(
        penalty) / word_divisor(batch["mask"], num_words)}

  # -- One step, in parts ----------------------------------------------------

  def _select_context(self, expected, weights, state, training):
    """The context fed on: here the expectation itself (soft attention).

    Args:
      expected: float32 [B, D], sum_i alpha_i a_i.
      weights: float32 [B, L], alpha.
    Returns (context [B, D], dict of extra per-step records).
    """
    del weights, state, training
    return expected, {}

  def _recur(self, embedded, state, training):
    """Attention and one LSTM step: embedded [B, E] -> (record, state).

    record: "hidden" h_t [B, H], "context" z_t [B, D], "attention" alpha_t
    [B, L], plus what _select_context adds.
    """
    previous = state["cell"][0]  # h_{t-1}: [B, H]
    expected, weights = self.attention(previous, state["features"],
                                       keys=state["keys"])
    context, extra = self._select_context(expected, weights, state, training)
    if self.gating:
      context = self.gate(previous) * context  # beta_t z_t, sec. 4.2.1
    hidden, cell = self.cell(tf.concat([embedded, context], -1),
                             state["cell"], training=training)
    record = {"hidden": hidden, "context": context, "attention": weights,
              **extra}
    return record, {**state, "cell": list(cell)}

  def _output(self, embedded, hidden, context, training):
    """Logits [..., V] from E y_{t-1} [..., E], h_t [..., H], z_t [..., D]."""
    if self.deep_output:  # eq. 7
      deep = tf.tanh(embedded + self.deep_hidden(hidden) +
                     self.deep_context(context))
      return self.output_logits(deep, training)
    return self.output_logits(tf.concat([hidden, context], -1), training)


def doubly_stochastic_penalty(attention, mask):
  """Each caption's sum_i (1 - sum_t alpha_ti)^2 (eq. 14): float32 [B].

  Args:
    attention: float32 [B, T, L], alpha.
    mask: float32 [B, T], 1 on real steps; padded steps do not count.
  """
  coverage = tf.einsum("btl,bt->bl", attention, mask)  # sum_t alpha_ti
  return tf.reduce_sum(tf.square(1.0 - coverage), axis=-1)


def word_divisor(mask, num_words=None):
  """N of the per-word losses: ``num_words``, else the real words of
  ``mask`` [B, T]; at least 1."""
  return tf.maximum(tf.reduce_sum(mask) if num_words is None else num_words,
                    1.0)


def _batch_major(stacked):
  """[T, B, ...] -> [B, T, ...]."""
  rank = len(stacked.shape)
  return tf.transpose(stacked, [1, 0] + list(range(2, rank)))
