"""Multi-head attention that also runs one query position at a time.

Shape letters: B batch, T query positions, S key positions, W model width,
N heads, K key width per head (W / N).

``keras.layers.MultiHeadAttention`` computes, for each head,
softmax(Q K^T / sqrt(K)) V over whole sequences (Vaswani et al. 2017, eq. 1).
Incremental decoding needs its parts: project the keys and values of a
position once, keep them (a cache, or an image's memory), and attend from
the newest position only. ``CachedMultiHeadAttention`` adds exactly that,
through the layer's own projection sublayers (``query_dense``, ``key_dense``,
``value_dense``, ``output_dense``) and its ``_compute_attention``, the step
Keras documents for overriding (keras-hub's cached attention calls it the
same way); so a step runs the arithmetic of the parallel pass, and the
tests check that they agree.
"""

import keras


@keras.saving.register_keras_serializable(package="attention")
class CachedMultiHeadAttention(keras.layers.MultiHeadAttention):
  """``keras.layers.MultiHeadAttention`` with ``project`` and ``attend``.

  Constructed as MultiHeadAttention (``num_heads``, ``key_dim``, ...);
  flash attention is off, so that attention weights can be returned.
  """

  def __init__(self, num_heads, key_dim, **kwargs):
    kwargs.setdefault("flash_attention", False)
    super().__init__(num_heads, key_dim, **kwargs)

  def ensure_built(self, query_shape, value_shape):
    """Builds the projections for queries and values of these shapes (a
    decoder may step before any parallel call)."""
    if not self.built:
      self.build(query_shape, value_shape)

  def project(self, inputs):
    """inputs [B, S, W] -> (keys [B, S, N, K], values [B, S, N, K])."""
    return self.key_dense(inputs), self.value_dense(inputs)

  def attend(self, query, keys, values, mask=None, training=False,
             return_weights=False):
    """Attention from unprojected queries to projected keys and values.

    Args:
      query: [B, T, W].
      keys, values: [B, S, N, K], from ``project``.
      mask: optional bool [B, T, S]; false hides a key.
    Returns:
      output [B, T, W]; with ``return_weights``, also the weights
      [B, N, T, S].
    """
    output, weights = self._compute_attention(
        self.query_dense(query), keys, values, mask, training,
        return_attention_scores=return_weights)
    output = self.output_dense(output)
    return (output, weights) if return_weights else output
