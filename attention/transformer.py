"""A Transformer decoder under the decoder-step contract.

Shape letters: B batch, T caption length, L image locations, D feature
channels, S memory entries (L, or L + 1 with the pooled token), W model
width (the config's ``hidden_size``), N heads, F feed-forward width, M cache
length (``max_positions``), E embedding size, V vocabulary.

Pre-layer-norm blocks (Xiong et al. 2020, as GPT-2) of Vaswani et al.'s
decoder (2017, sec. 3.1) over the words, attending to the image:

  m = F_m a (+ the pooled token F_p mean_i a_i first) + p^loc     [B, S, W]
  x^0_t = W_in E y_t + p_t       (W_in only where E != W)         [B, T, W]
  u = x + Drop(SelfAttention(LN(x)))     causal: position t sees 0..t
  v = u + Drop(CrossAttention(LN(u), m))
  x' = v + Drop(W_2 act(W_1 LN(v) + b_1) + b_2)
  p(y_{t+1} | y_{<=t}, a) = softmax(L_o Drop(LN(x^K_t)))    (K blocks)

with attention(Q, K, V) = softmax(Q K^T / sqrt(W / N)) V per head (eq. 1).
L_o is the base class's shared output layer (with ``tied_embeddings``, the
word embedding's transpose, after a projection W -> E where they differ).

The layers: ``keras.layers.MultiHeadAttention`` (through
``cached_attention.CachedMultiHeadAttention``), ``LayerNormalization``,
``Dense``. keras-hub's ``TransformerDecoder`` has the same block and cache,
but installing keras-hub brings tensorflow-text (which requires the full
``tensorflow`` package beside ``tensorflow-cpu``), sentencepiece, tokenizers
and kagglehub, none of which the library otherwise needs; Keras's own
attention layer is all the block requires.

The step contract: ``initial_state`` projects the memory and its
cross-attention keys and values once per image; ``step`` appends the new
word's self-attention keys and values to a cache of fixed length M in the
state (so it fits ``tf.while_loop`` and the export), and the search reorders
its rows with the beams like any other state. ``teacher_forced`` runs all
positions in one pass under a causal mask; the tests check that the steps
give its logits.
"""

import keras
import numpy as np
import tensorflow as tf

from attention.cached_attention import CachedMultiHeadAttention
from im2txt_ext.models.decoder import CaptionDecoder, StepOutput

POSITIONS = ("learned", "sinusoidal")


def sinusoids(length, width):
  """Vaswani et al.'s positional encodings (sec. 3.5): float32 [length, W],
  PE(p, 2i) = sin(p / 10000^(2i/W)), PE(p, 2i+1) = cos(p / 10000^(2i/W))."""
  positions = np.arange(length, dtype=np.float64)[:, None]
  rates = 1.0 / 10000.0 ** (np.arange(0, width, 2) / width)
  table = np.zeros([length, width])
  table[:, 0::2] = np.sin(positions * rates)
  table[:, 1::2] = np.cos(positions * rates[:width // 2])
  return table.astype(np.float32)


@keras.saving.register_keras_serializable(package="attention")
class LocationEmbedding(keras.layers.Layer):
  """A learned vector per memory entry, added: [B, S, W] -> [B, S, W]."""

  def build(self, input_shape):
    self.table = self.add_weight(
        shape=tuple(input_shape[1:]), name="table",
        initializer=keras.initializers.RandomNormal(stddev=0.02))

  def call(self, memory):
    return memory + tf.cast(self.table, memory.dtype)


@keras.saving.register_keras_serializable(package="attention")
class DecoderBlock(keras.layers.Layer):
  """One pre-layer-norm block: causal self-attention, cross-attention to the
  memory, feed-forward; each a residual branch with dropout."""

  def __init__(self, width, num_heads, feed_forward_size, dropout,
               attention_dropout=0.0, activation="gelu", **kwargs):
    super().__init__(**kwargs)
    self.activation = activation
    head_width = width // num_heads
    self.self_attention = CachedMultiHeadAttention(
        num_heads, head_width, dropout=attention_dropout,
        name="self_attention")
    self.cross_attention = CachedMultiHeadAttention(
        num_heads, head_width, dropout=attention_dropout,
        name="cross_attention")
    self.self_norm = keras.layers.LayerNormalization(epsilon=1e-5,
                                                     name="self_norm")
    self.cross_norm = keras.layers.LayerNormalization(epsilon=1e-5,
                                                      name="cross_norm")
    self.feed_forward_norm = keras.layers.LayerNormalization(
        epsilon=1e-5, name="feed_forward_norm")
    self.feed_forward_in = keras.layers.Dense(
        feed_forward_size, activation=activation, name="feed_forward_in")
    self.feed_forward_out = keras.layers.Dense(width,
                                               name="feed_forward_out")
    self.dropout = keras.layers.Dropout(dropout)

  def get_config(self):
    config = super().get_config()
    attention = self.self_attention
    config.update(width=self.feed_forward_out.units,
                  num_heads=attention.num_heads,
                  feed_forward_size=self.feed_forward_in.units,
                  dropout=self.dropout.rate,
                  attention_dropout=attention.dropout,
                  activation=self.activation)
    return config

  def call(self, x, memory, training=False):
    """All positions at once: x [B, T, W], memory [B, S, W] -> (x' [B, T, W],
    cross-attention weights float [B, N, T, S])."""
    normed = self.self_norm(x)
    x = x + self.dropout(self.self_attention(
        normed, normed, use_causal_mask=True, training=training),
                         training=training)
    attended, weights = self.cross_attention(
        self.cross_norm(x), memory, return_attention_scores=True,
        training=training)
    x = x + self.dropout(attended, training=training)
    return self._feed_forward(x, training), weights

  def step(self, x, cache, position, memory_cache, training=False):
    """One new position per row.

    Args:
      x: [B, 1, W], the position's input.
      cache: (keys, values), each [B, M, N, W/N]: the self-attention's
        projections of the positions so far.
      position: int32 [B], the new position's index t < M.
      memory_cache: (keys, values), each [B, S, N, W/N], from
        ``cross_attention.project`` of the memory.
    Returns:
      (x' [B, 1, W], the cache with the new position written, the
      cross-attention weights [B, N, 1, S]).
    """
    normed = self.self_norm(x)
    self.self_attention.ensure_built(normed.shape, normed.shape)
    new_keys, new_values = self.self_attention.project(normed)
    slots = tf.range(tf.shape(cache[0])[1])[None]  # [1, M]
    written = tf.equal(slots, position[:, None])[:, :, None, None]
    keys = tf.where(written, new_keys, cache[0])
    values = tf.where(written, new_values, cache[1])
    visible = (slots <= position[:, None])[:, None, :]  # [B, 1, M]
    x = x + self.dropout(self.self_attention.attend(
        normed, keys, values, visible, training), training=training)
    attended, weights = self.cross_attention.attend(
        self.cross_norm(x), *memory_cache, training=training,
        return_weights=True)
    x = x + self.dropout(attended, training=training)
    return self._feed_forward(x, training), (keys, values), weights

  def _feed_forward(self, x, training):
    inner = self.feed_forward_in(self.feed_forward_norm(x))
    return x + self.dropout(self.feed_forward_out(inner), training=training)


@keras.saving.register_keras_serializable(package="attention")
class TransformerDecoder(CaptionDecoder):
  """A Transformer decoder over the encoder's spatial map.

  Reads the "spatial" output [B, L, D]. The model width W is
  ``hidden_size``; ``cell`` is not used. Besides CaptionDecoder's arguments
  (``decoder_options`` in the config):

  Args:
    num_layers: int. Decoder blocks. Defaults to 3.
    num_heads: int. Attention heads; must divide W. Defaults to 8.
    feed_forward_size: int or None. F; None: 4 W.
    positions: str. "learned" word positions (a table of M vectors) or
      "sinusoidal" (Vaswani et al., sec. 3.5). Defaults to "learned".
    location_embedding: bool. Add a learned vector per memory entry, so
      that attention can tell the locations apart by place. Defaults to
      True.
    pooled_token: bool. Prepend the projected mean feature as one more
      memory entry. Defaults to False.
    max_positions: int. M, the most words a caption can be fed, in
      training (the input captions' length) and in search (``max_length``).
      Defaults to 40.
    attention_dropout: float. Drop rate on the attention weights.
      Defaults to 0.
    activation: str. Of the feed-forward layer. Defaults to "gelu".
    attention_block: int. The block whose cross-attention ``step`` and
      ``teacher_forced`` return (negative counts from the last). Defaults
      to -1.
    attention_head: int or None. That head's weights; None: the mean over
      heads. Defaults to None.

  The returned attention covers the L locations (the pooled token's weight
  left out).

  Reference: Vaswani et al., "Attention Is All You Need", NeurIPS 2017.
  """

  feature_kind = "spatial"
  has_attention = True
  static_state = ("memory",)

  def __init__(self, vocab_size, num_layers=3, num_heads=8,
               feed_forward_size=None, positions="learned",
               location_embedding=True, pooled_token=False,
               max_positions=40,
               attention_dropout=0.0, activation="gelu", attention_block=-1,
               attention_head=None, **kwargs):
    super().__init__(vocab_size, **kwargs)
    width = self.hidden_size
    if num_layers < 1:
      raise ValueError(f"num_layers must be >= 1, got {num_layers}")
    if num_heads < 1 or width % num_heads:
      raise ValueError(f"num_heads must divide the model width "
                       f"(hidden_size {width}), got {num_heads}")
    if positions not in POSITIONS:
      raise ValueError(f"positions must be one of {POSITIONS}, got "
                       f"{positions!r}")
    if not -num_layers <= attention_block < num_layers:
      raise ValueError(f"attention_block must be in {-num_layers}.."
                       f"{num_layers - 1}, got {attention_block}")
    if attention_head is not None and not 0 <= attention_head < num_heads:
      raise ValueError(f"attention_head must be in 0..{num_heads - 1} or "
                       f"None, got {attention_head}")
    if max_positions < 1:
      raise ValueError(f"max_positions must be >= 1, got {max_positions}")
    self.num_layers = num_layers
    self.num_heads = num_heads
    self.feed_forward_size = feed_forward_size
    self.positions = positions
    self.max_steps = max_positions  # The search's max_length bound.
    self.pooled_token = pooled_token
    self.attention_dropout = attention_dropout
    self.activation = activation
    self.attention_block = attention_block % num_layers
    self.attention_head = attention_head
    self.word_projection = keras.layers.Dense(
        width, use_bias=False, name="word_projection") \
        if self.embedding_size != width else None
    if positions == "learned":
      self.position_embedding = keras.layers.Embedding(
          max_positions, width, name="position_embedding")
    else:
      self.position_embedding = None
      self.position_table = sinusoids(max_positions, width)
    self.memory_projection = keras.layers.Dense(width,
                                                name="memory_projection")
    self.pooled_projection = keras.layers.Dense(
        width, name="pooled_projection") if pooled_token else None
    self.location_embedding = LocationEmbedding(
        name="location_embedding") if location_embedding else None
    # Each block is an attribute: tf.train.Checkpoint does not save Keras
    # layers held in a list.
    for i in range(num_layers):
      setattr(self, f"block_{i}", DecoderBlock(
          width, num_heads, feed_forward_size or 4 * width,
          self.input_dropout.rate, attention_dropout, activation,
          name=f"block_{i}"))
    self.final_norm = keras.layers.LayerNormalization(epsilon=1e-5,
                                                      name="final_norm")

  @property
  def blocks(self):
    return [getattr(self, f"block_{i}") for i in range(self.num_layers)]

  def get_config(self):
    config = super().get_config()
    config.update(
        num_layers=self.num_layers, num_heads=self.num_heads,
        feed_forward_size=self.feed_forward_size, positions=self.positions,
        location_embedding=self.location_embedding is not None,
        pooled_token=self.pooled_token,
        max_positions=self.max_steps,
        attention_dropout=self.attention_dropout, activation=self.activation,
        attention_block=self.attention_block,
        attention_head=self.attention_head)
    return config

  # -- The contract ----------------------------------------------------------

  def initial_state(self, features, training=False):
    """features [B, L, D] -> {"position": int32 [B] (0), "cache": per block
    (keys, values) [B, M, N, W/N] (zeros), "memory": per block the
    cross-attention's (keys, values) [B, S, N, W/N]}; in the layers'
    compute dtype."""
    memory = self.memory(features, training)
    batch_size = tf.shape(memory)[0]
    head_width = self.hidden_size // self.num_heads
    zeros = tf.zeros([batch_size, self.max_steps, self.num_heads,
                      head_width], self.compute_dtype)
    memory_cache = []
    for block in self.blocks:
      block.cross_attention.ensure_built(
          (None, 1, self.hidden_size), memory.shape)
      memory_cache.append(block.cross_attention.project(memory))
    return {"position": tf.zeros([batch_size], tf.int32),
            "cache": [(zeros, zeros)] * self.num_layers,
            "memory": memory_cache}

  def step(self, word_ids, state, training=False):
    position = state["position"]  # [B]
    x = self.word_inputs(word_ids[:, None], position[:, None], training)
    caches, weights = [], []
    for block, cache, memory_cache in zip(self.blocks, state["cache"],
                                          state["memory"]):
      x, cache, block_weights = block.step(x, cache, position,
                                           memory_cache, training)
      caches.append(cache)
      weights.append(block_weights)
    logits = self.output_logits(self.final_norm(x)[:, 0], training)
    return StepOutput(logits, {"position": position + 1, "cache": caches,
                               "memory": state["memory"]},
                      self.shown_attention(weights)[:, 0])

  def teacher_forced(self, features, input_ids, training=False):
    """All positions in one pass under a causal mask.

    Returns (logits float32 [B, T, V], {"attention": float32 [B, T, L]}).
    """
    length = tf.shape(input_ids)[1]
    with tf.control_dependencies([tf.debugging.assert_less_equal(
        length, self.max_steps, message="captions are longer than the "
        "transformer's max_positions")]):
      positions = tf.range(length)[None]
    memory = self.memory(features, training)
    x = self.word_inputs(input_ids, positions, training)
    weights = []
    for block in self.blocks:
      x, block_weights = block(x, memory, training=training)
      weights.append(block_weights)
    logits = self.output_logits(self.final_norm(x), training)
    return logits, {"attention": self.shown_attention(weights)}

  # -- Parts -----------------------------------------------------------------

  def memory(self, features, training=False):
    """The image as memory: features [B, L, D] -> m [B, S, W]."""
    features = tf.cast(features, self.compute_dtype)
    memory = self.memory_projection(features)
    if self.pooled_token:
      pooled = self.pooled_projection(tf.reduce_mean(features, axis=1))
      memory = tf.concat([pooled[:, None], memory], axis=1)
    if self.location_embedding is not None:
      memory = self.location_embedding(memory)
    return self.input_dropout(memory, training=training)

  def word_inputs(self, word_ids, positions, training=False):
    """x^0: word_ids int32 [B, T] at positions int32 [B or 1, T] -> [B, T,
    W]."""
    x = self.embed(word_ids, training)
    if self.word_projection is not None:
      x = self.word_projection(x)
    if self.position_embedding is not None:
      return x + self.position_embedding(positions)
    return x + tf.gather(tf.constant(self.position_table, x.dtype),
                         positions)

  def shown_attention(self, weights):
    """The attention the decoder reports: per block [B, N, T, S] -> the
    chosen block's head (or mean over heads) on the L locations, float32
    [B, T, L]."""
    chosen = tf.cast(weights[self.attention_block], tf.float32)
    chosen = tf.reduce_mean(chosen, axis=1) if self.attention_head is None \
        else chosen[:, self.attention_head]
    return chosen[..., 1:] if self.pooled_token else chosen
