"""What every caption decoder shares, and the decoder-step contract.

Shape letters: B batch, T caption length, E embedding size, H hidden units,
V vocabulary, L image locations, D feature channels.

The contract (after im2txt's ``feed_image`` / ``inference_step``), which the
one search, the one training loop and export use for every decoder:
  * ``initial_state(features, training)``: image features -> state, a dict
    of tensors whose leading dimension is B (search tiles it over beams);
  * ``step(word_ids, state, training)``: int32 [B] previous words and state
    -> ``StepOutput(logits [B, V], state, attention [B, L] or None)``;
  * ``static_state``: names of state entries that ``step`` passes on
    unchanged (an image's features and keys), which the beam search then
    does not reorder with the beams;
  * ``max_steps`` (optional): the most steps the decoder can run (a
    Transformer's cache length); the searches refuse a longer max_length.
Logits and attention are float32 even when the layers compute in float16
or bfloat16 (mixed precision); the state is in the layers' compute dtype.

``teacher_forced`` runs the step over a whole caption for training; a
subclass may override it with a faster equivalent (the no-attention decoders
run a fused RNN layer and one output matmul over all steps), and the tests
check that the two agree.

Every decoder serialises with ``keras.saving`` (``get_config`` /
``from_config``, its encoder included), so a built one saves as ``.keras``.
"""

import collections

import keras
import tensorflow as tf

from im2txt_ext.models.tied_logits import TiedLogits

StepOutput = collections.namedtuple("StepOutput", "logits state attention")


def make_rnn(cell, units, name="rnn"):
  """A sequence RNN layer of the chosen cell type; its ``.cell`` steps once."""
  layers = {"lstm": keras.layers.LSTM, "gru": keras.layers.GRU,
            "rnn": keras.layers.SimpleRNN}
  if cell not in layers:
    raise ValueError(f"cell must be one of {sorted(layers)}, got {cell!r}")
  return layers[cell](units, return_sequences=True, return_state=True,
                      name=name)


def scheduled_sampling_seeds(seed, t):
  """Seeds int32 [2] of step t's draws in ``sampled_forward``: (the sampled
  word's, the coin's). t is folded into the training step's ``seed`` and
  the result split in two, so that no two draws, at any word position of
  any training step, share a stream."""
  seeds = tf.random.experimental.stateless_split(
      tf.random.experimental.stateless_fold_in(seed, t), 2)
  return seeds[0], seeds[1]


def zero_cell_state(rnn, batch_size):
  """Zero recurrent state: [h, c] for an LSTM, [h] otherwise, each [B, H]
  in the layer's compute dtype (float32, or 16 bits under mixed precision)."""
  count = 2 if isinstance(rnn, keras.layers.LSTM) else 1
  return [tf.zeros([batch_size, rnn.units], rnn.compute_dtype)
          for _ in range(count)]


class CaptionDecoder(keras.Model):
  """Base class: word embedding, output layer, encoder hookup, teacher forcing.

  Args:
    vocab_size: int. V, the number of words including the special tokens.
    embedding_size: int. E, the word embedding width.
    hidden_size: int. H, the recurrent state width.
    dropout: float. Drop rate on the recurrent input and output.
    encoder: optional keras.Model, images -> {"pooled", "spatial"}; used
      when batches carry images instead of cached features.
    freeze_embeddings: bool. Keep the word embedding fixed in training.
    cell: str. "lstm", "gru" or "rnn".
    tied_embeddings: bool. Logits from the word embedding's transpose
      (``TiedLogits``) instead of an output layer of their own.
  """

  feature_kind = "pooled"  # Which encoder output the decoder reads.
  static_state = ()  # State entries that step() never changes.

  def __init__(self, vocab_size, embedding_size=512, hidden_size=512,
               dropout=0.3, encoder=None, freeze_embeddings=False,
               cell="lstm", tied_embeddings=False, **kwargs):
    super().__init__(**kwargs)
    self.vocab_size = vocab_size
    self.embedding_size = embedding_size
    self.hidden_size = hidden_size
    self.dropout_rate = dropout
    self.freeze_embeddings = freeze_embeddings
    self.cell_type = cell
    self.tied_embeddings = tied_embeddings
    self.encoder = encoder
    self.word_embedding = keras.layers.Embedding(
        vocab_size, embedding_size, trainable=not freeze_embeddings,
        name="word_embedding")
    self.input_dropout = keras.layers.Dropout(dropout)
    self.output_dropout = keras.layers.Dropout(dropout)
    self.logits_layer = TiedLogits(self.word_embedding, name="logits") \
        if tied_embeddings else keras.layers.Dense(vocab_size, name="logits")

  # -- Serialisation ---------------------------------------------------------

  def get_config(self):
    """The constructor arguments, the encoder as its Keras config."""
    config = super().get_config()
    config.update(
        vocab_size=self.vocab_size, embedding_size=self.embedding_size,
        hidden_size=self.hidden_size, dropout=self.dropout_rate,
        encoder=keras.saving.serialize_keras_object(self.encoder),
        freeze_embeddings=self.freeze_embeddings, cell=self.cell_type,
        tied_embeddings=self.tied_embeddings)
    return config

  @classmethod
  def from_config(cls, config):
    config = dict(config)
    encoder = keras.saving.deserialize_keras_object(config.pop("encoder"))
    return cls(encoder=encoder, **config)

  def build_from_config(self, config):
    """Creates the weights (the layers make them on their first call) by a
    call on zeros shaped as the first batch, unknown sizes as 1; a call,
    not Keras's symbolic trace, so the weights' paths are the model's."""
    batch = {name: tf.zeros([size or 1 for size in shape],
                            tf.int32 if name == "input_ids" else tf.float32)
             for name, shape in config["input_shape"].items()
             if name in ("input_ids", "features", "image")}
    self(batch, training=False)

  # -- Features --------------------------------------------------------------

  def encode(self, batch, training=False):
    """Cached ``features`` or the encoder's output for ``image``.

    Returns float32 [B, D] (pooled) or [B, L, D] (spatial).
    """
    if "features" in batch:
      return tf.cast(batch["features"], tf.float32)
    if self.encoder is None:
      raise ValueError("batch has images but the decoder has no encoder")
    return self.encoder(batch["image"], training=training)[self.feature_kind]

  def attach_encoder(self, encoder):
    """Sets the image encoder of a decoder already built without one (trained
    on cached features), so that it captions images. Keras locks a built
    layer's attributes; this unlocks them for this one assignment."""
    locked = self._tracker.locked
    self._tracker.unlock()
    self.encoder = encoder
    if locked:
      self._tracker.lock()

  # -- The contract ----------------------------------------------------------

  def initial_state(self, features, training=False):
    raise NotImplementedError

  def step(self, word_ids, state, training=False):
    raise NotImplementedError

  def embed(self, word_ids, training=False):
    """int32 [B] or [B, T] -> float32 [B, E] or [B, T, E], with dropout."""
    return self.input_dropout(self.word_embedding(word_ids), training=training)

  def output_logits(self, hidden, training=False):
    """[..., H] -> float32 [..., V] logits, the shared output layer with
    dropout; float32 even under mixed precision, so that softmax and loss
    are computed in full precision."""
    return tf.cast(self.logits_layer(self.output_dropout(
        hidden, training=training)), tf.float32)

  # -- Training --------------------------------------------------------------

  def teacher_forced(self, features, input_ids, training=False):
    """Logits for every position of the input captions.

    Returns (logits float32 [B, T, V], aux dict); aux["attention"] is float32
    [B, T, L] for attention decoders.
    """
    return self.sampled_forward(features, input_ids, 0.0, training)

  def sampled_forward(self, features, input_ids, sampling_prob, training,
                      seed=None):
    """Step-by-step forward pass with scheduled sampling (Bengio et al. 2015).

    With probability ``sampling_prob`` each input word after the first is the
    model's own sample from the previous step instead of the true word. The
    draws are stateless, from ``scheduled_sampling_seeds(seed, t)``.
    """
    batch_size = tf.shape(input_ids)[0]
    length = tf.shape(input_ids)[1]
    state = self.initial_state(features, training)
    logits_ta = tf.TensorArray(tf.float32, size=length)
    attention_ta = tf.TensorArray(tf.float32, size=length)
    word = input_ids[:, 0]
    seed = tf.zeros([2], tf.int32) if seed is None else seed
    for t in tf.range(length):
      out = self.step(word, state, training)
      state = out.state
      logits_ta = logits_ta.write(t, out.logits)
      if out.attention is not None:
        attention_ta = attention_ta.write(t, out.attention)
      next_true = input_ids[:, tf.minimum(t + 1, length - 1)]
      if sampling_prob > 0:
        sample_seed, coin_seed = scheduled_sampling_seeds(seed, t)
        sampled = tf.cast(tf.random.stateless_categorical(
            out.logits, 1, sample_seed)[:, 0], tf.int32)
        use_sample = tf.random.stateless_uniform(
            [batch_size], coin_seed) < sampling_prob
        word = tf.where(use_sample, sampled, next_true)
      else:
        word = next_true
    logits = tf.transpose(logits_ta.stack(), [1, 0, 2])
    aux = {}
    if self.has_attention:
      aux["attention"] = tf.transpose(attention_ta.stack(), [1, 0, 2])
    return logits, aux

  has_attention = False  # True where step() returns attention weights.

  def loss_terms(self):
    """The variant's training terms beside the cross-entropy (e.g. the
    attention regularisers): loss strategies of
    ``im2txt_ext.training.objectives``, which the trainer adds."""
    return []

  def call(self, batch, training=False):
    """Teacher-forced logits for a batch: float32 [B, T, V]."""
    features = self.encode(batch, training)
    logits, _ = self.teacher_forced(features, batch["input_ids"], training)
    return logits


class WordFedDecoder(CaptionDecoder):
  """Base of the decoders whose RNN reads the word alone at each step (Show
  and Tell, the RNN baseline): ``self.rnn``'s cell on E y_{t-1}, then
  ``emit``, the variant's output from the cell's. At inference the cell may
  start from precomputed input projections instead
  (``word_inputs.PrecomputedWordInputs``), outside the model."""

  def step(self, word_ids, state, training=False):
    hidden, cell_state = self.rnn.cell(self.embed(word_ids, training),
                                       state["cell"], training=training)
    return self.emit(hidden, list(cell_state), state, training)

  def emit(self, hidden, cell_state, state, training=False):
    """The step after the cell: h_t [B, H], the new cell state and the
    previous state -> StepOutput."""
    raise NotImplementedError
