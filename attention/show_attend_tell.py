"""The Show, Attend and Tell decoder (Xu et al. 2015), with either attention.

Shape letters: B batch, T caption length, L image locations, D feature
channels, E embedding size, H hidden units, V vocabulary.

At step t, with h_{t-1} the previous LSTM state and a_i the L annotation
vectors of the image, the attention layer (soft_attention.SoftAttention or
hard_attention.HardAttention) gives the context z_hat_t and alpha_t
(eq. 4-6 or 8-9), and

  z_t = beta_t * z_hat_t,                                 (sec. 4.2.1)
    beta_t = sigmoid(f_beta(h_{t-1})) when ``gating``, else 1;
  h_t = LSTM([E y_{t-1}; z_t], h_{t-1})                   (eq. 1-3)
  p(y_t | a, y_{<t}) = softmax(L_o(tanh(E y_{t-1} + L_h h_t + L_z z_t)))
    with ``deep_output`` (eq. 7; the tanh is the authors' code), else
    softmax(L_o [h_t; z_t]).

L_o is the base class's shared output layer. h_0, c_0 are f_init(mean_i a_i)
with ``init_from_mean`` (sec. 3.1.2), else zeros. The attention layer's loss
terms (the doubly stochastic penalty, REINFORCE) are the decoder's.
"""

import inspect

import keras
import tensorflow as tf

from attention.hard_attention import HardAttention
from attention.soft_attention import SoftAttention
from im2txt_ext.models.decoder import CaptionDecoder, StepOutput
from im2txt_ext.models.decoder import make_rnn

ATTENTION = {"soft": SoftAttention, "hard": HardAttention}


@keras.saving.register_keras_serializable(package="attention")
class ShowAttendTell(CaptionDecoder):
  """Show, Attend and Tell over spatial features, soft or hard attention.

  Reads the encoder's "spatial" output [B, L, D]. Besides CaptionDecoder's
  arguments (``decoder_options`` in the config; "soft_attention" and
  "hard_attention" preset ``attention``):

  Args:
    attention: str. "soft" or "hard". Defaults to "soft".
    attention_size: int or None. K, the width of the additive scoring MLP.
      Defaults to hidden_size.
    init_from_mean: bool. Initial h, c = tanh(Dense(mean_i a_i)), separate
      weights for each (f_init,h and f_init,c of sec. 3.1.2); False: zeros.
      Defaults to True.
    gating: bool. Scale the context by beta = sigmoid(f_beta(h_{t-1}))
      (sec. 4.2.1). Defaults to True.
    deep_output: bool. Output layer of eq. 7; False: logits from [h_t; z_t].
      Defaults to True.
    **options: the attention layer's other arguments (``score``,
      ``doubly_stochastic``; for hard attention ``expectation_prob``,
      ``reinforce_weight``, ``entropy_weight``, ``baseline_decay``,
      ``reward``, ``inference``), where given; the rest go to CaptionDecoder.

  Reference: Xu et al., "Show, Attend and Tell: Neural Image Caption
  Generation with Visual Attention", ICML 2015.
  """

  feature_kind = "spatial"
  has_attention = True
  static_state = ("features", "keys")

  def __init__(self, vocab_size, attention="soft", attention_size=None,
               init_from_mean=True, gating=True, deep_output=True,
               **options):
    if attention not in ATTENTION:
      raise ValueError(f"attention must be one of {sorted(ATTENTION)}, got "
                       f"{attention!r}")
    layer_class = ATTENTION[attention]
    accepted = set(inspect.signature(layer_class.__init__).parameters) | \
        set(inspect.signature(SoftAttention.__init__).parameters)
    self.attention_options = {name: options.pop(name) for name in
                              list(options) if name in accepted - {"self"}}
    super().__init__(vocab_size, **options)
    self.attention_kind = attention
    self.attention_size = attention_size
    self.init_from_mean = init_from_mean
    self.gating = gating
    self.deep_output = deep_output
    # Stages in order: initial state, attention, recurrence, output.
    self.state_count = 2 if self.cell_type == "lstm" else 1  # [h, c] or [h]
    # f_init,h and f_init,c side by side in one layer (not a list of layers:
    # tf.train.Checkpoint does not save Keras layers held in a list).
    self.init_state = keras.layers.Dense(
        self.state_count * self.hidden_size, activation="tanh",
        name="init_state") if init_from_mean else None
    score = self.attention_options.get("score", "additive")
    units = self.hidden_size if score == "dot" else \
        attention_size or self.hidden_size
    self.attention = layer_class(units, name="attention",
                                 **self.attention_options)
    # Checkpoints written before attention was a layer hold the reward
    # baseline at the decoder's top level; the same variable is kept there.
    if hasattr(self.attention, "reward_baseline"):
      self.reward_baseline = self.attention.reward_baseline
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
    config.update(attention=self.attention_kind,
                  attention_size=self.attention_size,
                  init_from_mean=self.init_from_mean, gating=self.gating,
                  deep_output=self.deep_output, **self.attention_options)
    return config

  # -- The contract ----------------------------------------------------------

  def initial_state(self, features, training=False):
    """features [B, L, D] -> {"cell": [h, c] each [B, H], "features":
    [B, L, D]} and the attention layer's state ("keys" [B, L, K], ...), in
    the layers' compute dtype (16 bits under mixed precision)."""
    features = tf.cast(features, self.compute_dtype)
    if self.init_from_mean:
      mean = tf.reduce_mean(features, axis=1)  # [B, D]
      cell = tf.split(self.init_state(mean), self.state_count, axis=-1)
    else:
      cell = [tf.zeros([tf.shape(features)[0], self.hidden_size],
                       self.compute_dtype)] * self.state_count
    return {"cell": cell, "features": features,
            **self.attention.initial_state(features, training)}

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
    and the attention layer's records, each [B, T, ...].
    """
    embedded = self.embed(input_ids, training)  # [B, T, E]
    length = tf.shape(input_ids)[1]
    state = self.initial_state(features, training)
    names = ("hidden", "context", "attention") + self.attention.records
    arrays = {name: tf.TensorArray(self.compute_dtype, size=length)
              for name in names}

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

  def loss_terms(self):
    return self.attention.loss_terms()

  # -- One step, in parts ----------------------------------------------------

  def _recur(self, embedded, state, training):
    """Attention and one LSTM step: embedded [B, E] -> (record, state).

    record: "hidden" h_t [B, H], "context" z_t [B, D], "attention" alpha_t
    [B, L], and the attention layer's extras.
    """
    previous = state["cell"][0]  # h_{t-1}: [B, H]
    context, weights, extras = self.attention(
        previous, state["features"], state, training=training)
    if self.gating:
      context = self.gate(previous) * context  # beta_t z_t, sec. 4.2.1
    hidden, cell = self.cell(tf.concat([embedded, context], -1),
                             state["cell"], training=training)
    record = {"hidden": hidden, "context": context, "attention": weights,
              **extras}
    return record, {**state, "cell": list(cell)}

  def _output(self, embedded, hidden, context, training):
    """Logits [..., V] from E y_{t-1} [..., E], h_t [..., H], z_t [..., D]."""
    if self.deep_output:  # eq. 7
      deep = tf.tanh(embedded + self.deep_hidden(hidden) +
                     self.deep_context(context))
      return self.output_logits(deep, training)
    return self.output_logits(tf.concat([hidden, context], -1), training)


def _batch_major(stacked):
  """[T, B, ...] -> [B, T, ...]."""
  rank = len(stacked.shape)
  return tf.transpose(stacked, [1, 0] + list(range(2, rank)))
