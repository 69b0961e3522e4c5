"""Skip-gram word2vec in TensorFlow: model, the two losses, the training loop.

Shape letters: B pairs in a batch, K noise words per pair, E vector size,
V vocabulary size.

The skip-gram objective (Mikolov et al., 2013a) maximises
``sum_t sum_{-m<=j<=m, j!=0} log P(w_{t+j} | w_t)`` with, for a centre word c
and a context word o,

  P(o | c) = exp(R_o^T S_c) / sum_{i=1..V} exp(R_i^T S_c)          (eq. 1)

where S holds the centre vectors and R the context vectors. Two losses train
it, both averaged over the pairs of a batch:

  softmax:  -log P(o | c), exact, O(V E) per pair                     (eq. 1)
  negative: -log sigma(R_o^T S_c) - sum_{k=1..K} log sigma(-R_k^T S_c),
            k ~ P_n(w) = U(w)^0.75 / Z, O(K E) per pair                (eq. 2)

(eq. 2 is eq. 4 of Mikolov et al., 2013b). As in the reference C code
(``if (target == word) continue;``), a noise word k drawn equal to the context
word o is left out of the sum. The pairs come from ``skipgram_pairs``, by
default with the reference's dynamic window. The centre vectors S are the word
vectors the trainer writes out.

References:
  Mikolov et al., 2013a. Efficient Estimation of Word Representations in Vector
    Space. arXiv:1301.3781.
  Mikolov et al., 2013b. Distributed Representations of Words and Phrases and
    their Compositionality. NeurIPS.
"""

import dataclasses
import time

import keras
import numpy as np
import tensorflow as tf

from embeddings import skipgram_pairs
from im2txt_ext.data.vocabulary import SPECIAL_TOKENS, Vocabulary
from im2txt_ext.errors import InputError

LOSSES = ("softmax", "negative")


@dataclasses.dataclass
class Word2VecConfig:
  """Skip-gram training settings, with defaults for a caption corpus."""
  dim: int = 100  # E, size of each word vector.
  window: int = 5  # m, context words taken on each side of the centre word.
  dynamic_window: bool = True  # Each centre's window drawn in 1..m; False: m.
  loss: str = "negative"  # "softmax" (exact, eq. 1) or "negative" (eq. 2).
  negatives: int = 5  # K, noise words per pair (negative sampling only).
  subsample: float = 1e-3  # t of the subsampling formula; 0 turns it off.
  min_count: int = 5  # Words seen fewer times are dropped from the corpus.
  epochs: int = 5  # Passes over the corpus.
  batch_size: int = 1024  # B, (centre, context) pairs per training step.
  learning_rate: float = 0.01  # Adam step size.
  seed: int = 0  # Seeds initialisation, shuffling, subsampling and noise.


@dataclasses.dataclass
class Word2VecResult:
  """What ``train`` returns.

  Attributes:
    vocab: Vocabulary. The corpus vocabulary; row i of ``vectors`` is word i.
    vectors: float32 np.ndarray with shape [V, E], the centre vectors S.
    epoch_losses: list of float, the mean loss of each epoch.
    words_per_second: list of float, corpus words read per second of
      training in each epoch (the first includes tf.function tracing).
  """
  vocab: Vocabulary
  vectors: np.ndarray
  epoch_losses: list
  words_per_second: list


def softmax_loss(centre_vectors, context_table, contexts):
  """Exact skip-gram loss, the mean of -log P(o | c) (eq. 1).

  Args:
    centre_vectors: float32 Tensor with shape [B, E], S_c for each pair.
    context_table: float32 Tensor with shape [V, E], all context vectors R.
    contexts: int32 Tensor with shape [B], the context word o of each pair.

  Returns:
    A float32 scalar Tensor.
  """
  logits = tf.matmul(centre_vectors, context_table, transpose_b=True)  # [B, V]
  return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
      labels=contexts, logits=logits))


def negative_sampling_loss(centre_vectors, context_vectors, noise_vectors,
                           noise_mask):
  """Negative-sampling loss (eq. 2), averaged over the pairs.

  Args:
    centre_vectors: float32 Tensor with shape [B, E], S_c.
    context_vectors: float32 Tensor with shape [B, E], R_o.
    noise_vectors: float32 Tensor with shape [B, K, E], R_k of the noise words.
    noise_mask: float32 Tensor with shape [B, K]: 1 for a noise word that
      counts, 0 for one left out of the sum (drawn equal to the context word).

  Returns:
    A float32 scalar Tensor.
  """
  positive = tf.reduce_sum(centre_vectors * context_vectors, -1)  # [B]
  negative = tf.einsum("be,bke->bk", centre_vectors, noise_vectors)  # [B, K]
  return tf.reduce_mean(
      -tf.math.log_sigmoid(positive) -
      tf.reduce_sum(noise_mask * tf.math.log_sigmoid(-negative), -1))


def noise_distribution(counts):
  """P_n(w) = U(w)^0.75 / Z, the unigram distribution raised to 3/4 (eq. 2).

  Returns:
    A float64 np.ndarray with shape [V] that sums to 1.
  """
  weights = np.asarray(counts, np.float64) ** 0.75
  return weights / weights.sum()


class SkipGram(keras.Model):
  """Centre vectors S and context vectors R, trained by one of two losses.

  Initialised as in Mikolov's C code: S uniform in [-0.5/E, 0.5/E], R zeros.

  Args:
    vocab_size: int. V.
    dim: int. E, size of each word vector.
    loss: str. "softmax" or "negative". Defaults to "negative".
    noise_probs: float sequence with shape [V], P_n for negative sampling
      (see ``noise_distribution``). Required for "negative".
    negatives: int. K, noise words per pair. Defaults to 5.
    seed: int. Seeds the initialisation and the noise draws. Defaults to 0.

  Reference:
    Mikolov et al., 2013a, 2013b (see the module docstring).
  """

  def __init__(self, vocab_size, dim, loss="negative", noise_probs=None,
               negatives=5, seed=0, **kwargs):
    super().__init__(**kwargs)
    if loss not in LOSSES:
      raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
    if loss == "negative" and noise_probs is None:
      raise ValueError("negative sampling needs noise_probs")
    self.vocab_size = vocab_size
    self.dim = dim
    self.loss_name = loss
    self.negatives = negatives
    self.centre_embedding = keras.layers.Embedding(
        vocab_size, dim, name="centre",
        embeddings_initializer=keras.initializers.RandomUniform(
            -0.5 / dim, 0.5 / dim, seed=seed))
    self.context_embedding = keras.layers.Embedding(
        vocab_size, dim, embeddings_initializer="zeros", name="context")
    # Cumulative P_n: a uniform draw u picks the word w with
    # cdf[w-1] <= u < cdf[w], so words of probability 0 are never drawn.
    self._noise_cdf = None if noise_probs is None else tf.constant(
        np.cumsum(noise_probs), tf.float32)
    self._noise_seed = keras.random.SeedGenerator(seed)
    self.centre_embedding.build((None,))
    self.context_embedding.build((None,))

  def call(self, words):
    """Word ids [...] -> centre vectors S [..., E]."""
    return self.centre_embedding(words)

  def sample_noise(self, batch_size):
    """Draws K noise words per pair from P_n: int32 Tensor [B, K]."""
    draw = keras.random.uniform((batch_size, self.negatives),
                                seed=self._noise_seed)
    words = tf.searchsorted(self._noise_cdf, tf.reshape(draw, [-1]),
                            side="right", out_type=tf.int32)
    return tf.reshape(tf.minimum(words, self.vocab_size - 1),
                      [batch_size, self.negatives])

  def pair_loss(self, centres, contexts):
    """Mean loss of a batch of pairs, int32 [B] and [B] -> float32 scalar."""
    centre_vectors = self.centre_embedding(centres)  # [B, E]
    if self.loss_name == "softmax":
      return softmax_loss(centre_vectors, self.context_embedding.embeddings,
                          contexts)
    noise = self.sample_noise(tf.shape(centres)[0])  # [B, K]
    # Noise equal to the context is skipped, as in the reference C code.
    noise_mask = tf.cast(noise != contexts[:, None], tf.float32)  # [B, K]
    return negative_sampling_loss(centre_vectors,
                                  self.context_embedding(contexts),
                                  self.context_embedding(noise), noise_mask)

  def get_config(self):
    return {**super().get_config(), "vocab_size": self.vocab_size,
            "dim": self.dim, "loss": self.loss_name,
            "negatives": self.negatives}


def encode_corpus(token_lists, vocab):
  """Token lists -> id lists, without the words outside the vocabulary.

  Like Mikolov's code, rare words are removed before the windows are taken,
  so the window reaches past them.
  """
  num_special = len(SPECIAL_TOKENS)
  sentences = []
  for tokens in token_lists:
    ids = [i for i in vocab.encode(tokens, add_start_end=False)
           if i >= num_special]
    if ids:
      sentences.append(ids)
  return sentences


def train(token_lists, config, verbose=True):
  """Trains skip-gram word vectors on a tokenised corpus.

  Args:
    token_lists: list of list of str, one list per sentence.
    config: Word2VecConfig.
    verbose: bool. Show a progress bar with the loss and words/s.

  Returns:
    A Word2VecResult.
  """
  vocab = Vocabulary.build(token_lists, min_count=config.min_count)
  sentences = encode_corpus(token_lists, vocab)
  num_words = sum(len(s) for s in sentences)
  if len(vocab) == len(SPECIAL_TOKENS) or num_words < 2:
    raise InputError(f"the corpus has {num_words} words seen at least "
                     f"{config.min_count} times (--min_count): too few to "
                     "train")
  model = SkipGram(len(vocab), config.dim, loss=config.loss,
                   noise_probs=noise_distribution(vocab.counts),
                   negatives=config.negatives, seed=config.seed)
  optimizer = keras.optimizers.Adam(config.learning_rate)
  keep_probs = skipgram_pairs.keep_probabilities(vocab.counts, config.subsample)

  @tf.function(input_signature=[tf.TensorSpec([None], tf.int32)] * 2)
  def train_step(centres, contexts):
    with tf.GradientTape() as tape:
      loss = model.pair_loss(centres, contexts)
    variables = model.trainable_variables
    optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
    return loss

  epoch_seeds = np.random.default_rng(config.seed).integers(
      2**31, size=config.epochs)
  epoch_losses, words_per_second = [], []
  for epoch in range(config.epochs):
    pairs = skipgram_pairs.pair_dataset(
        sentences, config.window, config.batch_size, keep_probs=keep_probs,
        dynamic_window=config.dynamic_window, seed=int(epoch_seeds[epoch]))
    if verbose:
      print(f"Epoch {epoch + 1}/{config.epochs}")
    progress = keras.utils.Progbar(num_words, verbose=int(verbose),
                                   stateful_metrics=["loss", "words/s"],
                                   unit_name="word")
    loss_sum, steps, words_read = 0.0, 0, 0.0
    start = time.perf_counter()
    for centres, contexts, words in pairs:
      loss_sum += train_step(centres, contexts)
      steps += 1
      words_read += float(words.numpy().sum())
      if verbose and steps % 50 == 0:
        elapsed = time.perf_counter() - start
        progress.update(words_read, [("loss", float(loss_sum) / steps),
                                     ("words/s", words_read / elapsed)])
    epoch_losses.append(float(loss_sum) / max(steps, 1))
    words_per_second.append(words_read / (time.perf_counter() - start))
    progress.update(num_words, [("loss", epoch_losses[-1]),
                                ("words/s", words_per_second[-1])],
                    finalize=True)
  vectors = model.centre_embedding.embeddings.numpy()
  return Word2VecResult(vocab, vectors, epoch_losses, words_per_second)
