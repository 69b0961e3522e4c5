"""Soft ("deterministic") attention of Show, Attend and Tell (Xu et al. 2015).

Shape letters: B batch, T caption length, L image locations, D feature
channels, H the query's width (the decoder state), K key width.

Every attention layer of the Show, Attend and Tell decoder has one call
shape,

  layer(query h_{t-1} [B, H], features a [B, L, D], state)
      -> (context z_t [B, D], weights alpha_t [B, L], extras),

where ``state`` holds what ``layer.initial_state(features, training)``
computed once per image (the keys, the part of the score that depends on
the image alone) and ``extras`` is a dict of per-step records named by
``layer.records`` (none here). Soft attention feeds the expectation:

  e_ti = f_att(a_i, h_{t-1})                              (eq. 4)
  alpha_ti = softmax_i(e_ti)                              (eq. 5)
  z_t = sum_i alpha_ti a_i                                (eq. 6, soft phi)

with f_att Xu et al.'s MLP, w^T tanh(W_a a_i + W_h h + b) ("additive"), or
a_i^T W h ("dot"; the plain a_i^T h where D = H). Its training term is the
doubly stochastic penalty of eq. 14, per caption as there:

  L_d = -log p(y | a) + lambda * sum_i (1 - sum_t alpha_ti)^2      (eq. 14)

summed over the batch and divided by N, its real words, the cross-entropy's
divisor; so lambda weighs the penalty against the caption's log-likelihood
as in the paper and the authors' code.
"""

import keras
import tensorflow as tf

from im2txt_ext.training.objectives import LossTerm

SCORES = ("additive", "dot")


@keras.saving.register_keras_serializable(package="attention")
class SoftAttention(keras.layers.Layer):
  """Soft attention: the context is the expected annotation vector.

  Args:
    score: str. "additive" (Xu et al.'s MLP, eq. 4) or "dot" (a_i^T W h).
      Defaults to "additive".
    units: int. K, the width of the additive MLP; for "dot", H, the width
      of the query it is called with.
    doubly_stochastic: float. lambda of eq. 14 (see the module doc); 0 =
      off. Defaults to 1.0 (the paper's value). Since sum_i sum_t alpha_ti
      = T, a caption's penalty is at least L (1 - T/L)^2 when T < L (about
      47 for 64 locations and T = 9, 5.3 a word): the logged loss has that
      floor.
  """

  records = ()  # Names of the per-step extras.

  def __init__(self, units, score="additive", doubly_stochastic=1.0,
               **kwargs):
    super().__init__(**kwargs)
    if score not in SCORES:
      raise ValueError(f"score must be 'additive' or 'dot', got {score!r}")
    self.units = units
    self.score = score
    self.doubly_stochastic = doubly_stochastic
    if score == "additive":
      self.feature_projection = keras.layers.Dense(units,
                                                   name="feature_proj")
      self.hidden_projection = keras.layers.Dense(units, use_bias=False,
                                                  name="hidden_proj")
      self.energy = keras.layers.Dense(1, use_bias=False, name="energy")
    else:  # W [D, H], used only where D != H.
      self.feature_projection = keras.layers.Dense(units, use_bias=False,
                                                   name="feature_proj")

  def get_config(self):
    config = super().get_config()
    config.update(units=self.units, score=self.score,
                  doubly_stochastic=self.doubly_stochastic)
    return config

  def build(self, query_shape, features_shape):
    if self.score == "dot":
      if features_shape[-1] != self.units and \
          not self.feature_projection.built:
        self.feature_projection.build(features_shape)
      return
    if not self.feature_projection.built:  # keys() may have built it.
      self.feature_projection.build(features_shape)
    self.hidden_projection.build(query_shape)
    self.energy.build(tuple(features_shape[:-1]) + (self.units,))

  def keys(self, features):
    """[B, L, D] -> [B, L, K], the part of the score that depends on the
    image alone: W_a a_i + b (additive), a_i^T W (dot)."""
    if self.score == "dot" and features.shape[-1] == self.units:
      return features
    return self.feature_projection(features)

  def scores(self, query, keys):
    """query [B, H], keys [B, L, K] -> e float32 [B, L] (eq. 4)."""
    if self.score == "dot":
      return tf.einsum("blh,bh->bl", keys, query)
    projected = self.hidden_projection(query)[:, None, :]  # W_h h: [B, 1, K]
    return self.energy(tf.tanh(keys + projected))[..., 0]

  def initial_state(self, features, training=False):
    """The per-image state: {"keys": [B, L, K]}."""
    del training
    return {"keys": self.keys(features)}

  def call(self, query, features, state=None, training=False):
    """Returns (context [B, D], weights [B, L], extras {}); ``state`` is
    ``initial_state(features)`` (computed here when None)."""
    expected, weights = self.expectation(query, features, state)
    return expected, weights, {}

  def expectation(self, query, features, state=None):
    """(sum_i alpha_i a_i [B, D], alpha [B, L]): eq. 4-6."""
    keys = self.keys(features) if state is None else state["keys"]
    weights = tf.nn.softmax(self.scores(query, keys), axis=-1)  # eq. 5
    return tf.einsum("bl,bld->bd", weights, features), weights

  def loss_terms(self):
    """The training terms this attention adds to the cross-entropy."""
    if not self.doubly_stochastic:
      return []
    return [DoublyStochasticPenalty(self.doubly_stochastic)]


class DoublyStochasticPenalty(LossTerm):
  """lambda * sum_b sum_i (1 - sum_t alpha_bti)^2 / N (eq. 14 over the
  batch), t over real (unmasked) steps, N the cross-entropy's divisor.
  Logs "doubly_stochastic"."""

  def __init__(self, weight):
    self.weight = weight

  def __call__(self, inputs, prepared=None):
    mask = inputs.batch["mask"]
    penalty = self.weight * tf.reduce_sum(doubly_stochastic_penalty(
        inputs.forward().aux["attention"], mask)) / tf.maximum(inputs.words,
                                                               1.0)
    return penalty, {"doubly_stochastic": penalty}


def doubly_stochastic_penalty(attention, mask):
  """Each caption's sum_i (1 - sum_t alpha_ti)^2 (eq. 14): float32 [B].

  Args:
    attention: float32 [B, T, L], alpha.
    mask: float32 [B, T], 1 on real steps; padded steps do not count.
  """
  coverage = tf.einsum("btl,bt->bl", attention, mask)  # sum_t alpha_ti
  return tf.reduce_sum(tf.square(1.0 - coverage), axis=-1)
