"""Attention layers: score every image location from the decoder's state.

Shape letters: B batch, L image locations, D feature channels, H hidden units,
K key width (the width features are projected to before scoring).

Every layer has one call shape,

  layer(hidden [B, H], features [B, L, D], feature_mask [B, L] or None)
      -> (context [B, D], weights [B, L]),

with weights alpha_i = softmax_i(e_i) over the unmasked locations and the
context z = sum_i alpha_i a_i (Xu et al. 2015, eq. 4-6, the soft "phi").
The part of the score that depends only on the image, ``keys(features)``
[B, L, K], can be computed once per image and passed back as ``keys=``, so a
decoder does not project all L locations again at every word.
"""

import keras
import tensorflow as tf

NEG_INF = -1e9


class AttentionScoring(keras.layers.Layer):
  """Base class: masked softmax over scores and the weighted context.

  Subclasses define ``keys(features)`` and ``score(hidden, keys)``.
  """

  def keys(self, features):
    """float32 [B, L, D] -> [B, L, K], the per-image part of the score."""
    raise NotImplementedError

  def score(self, hidden, keys):
    """hidden [B, H], keys [B, L, K] -> scores e float32 [B, L]."""
    raise NotImplementedError

  def call(self, hidden, features, feature_mask=None, keys=None):
    """Returns (context float32 [B, D], weights float32 [B, L]).

    Args:
      hidden: float32 [B, H], the decoder state h_{t-1}.
      features: float32 [B, L, D], the annotation vectors a_i.
      feature_mask: optional bool or 0/1 [B, L]; locations where it is
        false (padding) get weight 0.
      keys: optional float32 [B, L, K], ``self.keys(features)`` computed
        beforehand.
    """
    if keys is None:
      keys = self.keys(features)
    scores = self.score(hidden, keys)  # [B, L]
    if feature_mask is not None:
      scores = tf.where(tf.cast(feature_mask, tf.bool), scores, NEG_INF)
    weights = tf.nn.softmax(scores, axis=-1)  # [B, L], eq. 5
    context = tf.einsum("bl,bld->bd", weights, features)  # [B, D], eq. 6
    return context, weights


@keras.saving.register_keras_serializable(package="attention")
class AdditiveAttention(AttentionScoring):
  """Xu et al.'s MLP attention (eq. 4): e_i = w^T tanh(W_a a_i + W_h h + b).

  Args:
    units: int. K, the width of the hidden layer of f_att.
  """

  def __init__(self, units, **kwargs):
    super().__init__(**kwargs)
    self.units = units
    self.feature_projection = keras.layers.Dense(units, name="feature_proj")
    self.hidden_projection = keras.layers.Dense(units, use_bias=False,
                                                name="hidden_proj")
    self.energy = keras.layers.Dense(1, use_bias=False, name="energy")

  def build(self, hidden_shape, features_shape):
    if not self.feature_projection.built:  # keys() may have built it.
      self.feature_projection.build(features_shape)
    self.hidden_projection.build(hidden_shape)
    self.energy.build(tuple(features_shape[:-1]) + (self.units,))

  def keys(self, features):
    return self.feature_projection(features)  # W_a a_i + b: [B, L, K]

  def score(self, hidden, keys):
    projected = self.hidden_projection(hidden)[:, None, :]  # W_h h: [B, 1, K]
    return self.energy(tf.tanh(keys + projected))[..., 0]  # [B, L]

  def get_config(self):
    config = super().get_config()
    config.update(units=self.units)
    return config


@keras.saving.register_keras_serializable(package="attention")
class DotAttention(AttentionScoring):
  """Multiplicative attention: e_i = a_i^T W h.

  W [D, H] is learned where the feature and hidden widths differ; where they
  are equal the score is the plain dot product a_i^T h.

  Args:
    units: int. H, the width of the hidden state it is called with.
  """

  def __init__(self, units, **kwargs):
    super().__init__(**kwargs)
    self.units = units
    self.feature_projection = keras.layers.Dense(units, use_bias=False,
                                                 name="feature_proj")

  def build(self, hidden_shape, features_shape):
    del hidden_shape
    if features_shape[-1] != self.units and not self.feature_projection.built:
      self.feature_projection.build(features_shape)

  def keys(self, features):
    if features.shape[-1] == self.units:
      return features
    return self.feature_projection(features)  # a_i^T W: [B, L, H]

  def score(self, hidden, keys):
    return tf.einsum("blh,bh->bl", keys, hidden)

  def get_config(self):
    config = super().get_config()
    config.update(units=self.units)
    return config


def build_scoring(score, hidden_size, attention_size, name="attention"):
  """The attention layer for a decoder of ``hidden_size`` units.

  Args:
    score: str. "additive" (Xu et al.'s MLP, ``attention_size`` wide) or
      "dot" (a_i^T W h).
    hidden_size: int. H, the decoder state width.
    attention_size: int. K of the additive layer.
  """
  if score == "additive":
    return AdditiveAttention(attention_size, name=name)
  if score == "dot":
    return DotAttention(hidden_size, name=name)
  raise ValueError(f"score must be 'additive' or 'dot', got {score!r}")
