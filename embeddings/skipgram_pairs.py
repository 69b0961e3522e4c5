"""Skip-gram training pairs from a tf.data pipeline; frequent-word subsampling.

Shape letters: S sentences in a chunk, N tokens in a chunk, P pairs,
B pairs in a batch, V vocabulary size, m window (context words on each side).

Every word ``w_t`` of a sentence is paired with each word ``w_{t+j}``,
``-b <= j <= b, j != 0``, inside the same sentence (Mikolov et al., 2013a,
eq. 1), b being m (fixed window) or, as in the reference C code, drawn per
centre word uniformly in 1..m (dynamic window, 2013a, sec. 3.2). Pairs come out
centre by centre in sentence order and, for each centre, context by context
from left to right. All of it is tensor ops inside ``Dataset.map``; no Python
loop runs over the corpus.

References:
  Mikolov et al., 2013a. Efficient Estimation of Word Representations in Vector
    Space. arXiv:1301.3781.
  Mikolov et al., 2013b. Distributed Representations of Words and Phrases and
    their Compositionality. NeurIPS.
"""

import numpy as np
import tensorflow as tf


def keep_probabilities(counts, threshold):
  """Probability of keeping each word under frequent-word subsampling.

  Mikolov et al. (2013b), eq. 5, discard each occurrence of ``w`` with
  probability ``1 - sqrt(t / f(w))``, ``f(w)`` being the word's share of the
  corpus tokens and ``t`` the threshold; so the keep probability is
  ``min(1, sqrt(t / f(w)))``. (The released C code uses the slightly gentler
  ``sqrt(t / f) + t / f``.) Words never seen (count 0) are kept.

  Args:
    counts: sequence of int, the corpus count of each vocabulary id.
    threshold: float. ``t``, typically 1e-5 to 1e-3; 0 turns subsampling off.

  Returns:
    A float32 np.ndarray with shape [V].
  """
  counts = np.asarray(counts, dtype=np.float64)
  if threshold <= 0 or counts.sum() == 0:
    return np.ones(len(counts), np.float32)
  freq = counts / counts.sum()
  with np.errstate(divide="ignore"):
    keep = np.sqrt(threshold / freq)
  return np.minimum(keep, 1.0).astype(np.float32)


def subsample(sentences, keep_probs, seed):
  """Drops each token with probability ``1 - keep_probs[token]``.

  Args:
    sentences: int32 RaggedTensor with shape [S, None], word ids.
    keep_probs: float32 Tensor with shape [V].
    seed: int32 Tensor with shape [2], seed of the stateless draw.

  Returns:
    An int32 RaggedTensor with shape [S, None]: the kept tokens, in order.
  """
  draw = tf.random.stateless_uniform(tf.shape(sentences.flat_values), seed)
  keep = draw < tf.gather(keep_probs, sentences.flat_values)
  return tf.ragged.boolean_mask(sentences, sentences.with_flat_values(keep))


def window_pairs(sentences, window, seed=None):
  """The (centre, context) pairs within each centre's window, inside sentences.

  With ``seed``, each centre word draws its window b uniformly in 1..m, as
  Mikolov's C code does (2013a, sec. 3.2), so a pair at distance d comes out
  with probability (m - d + 1) / m: near words weigh more. Without, b = m.

  Args:
    sentences: int32 RaggedTensor with shape [S, None], word ids.
    window: int. m, the most context words taken on each side.
    seed: optional int Tensor with shape [2], seed of the stateless draw of
      the windows. None takes the fixed window m for every centre.

  Returns:
    (centres, contexts): int32 Tensors with shape [P].
  """
  ids = sentences.flat_values  # [N]
  row = sentences.value_rowids()  # [N]
  starts = tf.gather(sentences.row_starts(), row)[:, None]  # [N, 1]
  limits = tf.gather(sentences.row_limits(), row)[:, None]  # [N, 1]
  offsets = tf.concat([tf.range(-window, 0), tf.range(1, window + 1)], 0)
  positions = tf.range(tf.shape(ids, out_type=row.dtype)[0])[:, None]
  positions += tf.cast(offsets, row.dtype)[None, :]  # [N, 2m]
  valid = (positions >= starts) & (positions < limits)  # [N, 2m]
  if seed is not None:
    reach = tf.random.stateless_uniform(
        tf.shape(ids), seed, minval=1, maxval=window + 1, dtype=tf.int32)  # [N]
    valid &= tf.abs(offsets)[None, :] <= reach[:, None]
  centres = tf.boolean_mask(
      tf.broadcast_to(ids[:, None], tf.shape(positions)), valid)  # [P]
  contexts = tf.gather(ids, tf.boolean_mask(positions, valid))  # [P]
  return centres, contexts


def pair_dataset(sentences, window, batch_size, keep_probs=None,
                 dynamic_window=True, shuffle=True, seed=0,
                 sentences_per_chunk=512):
  """tf.data pipeline: sentences of ids -> batches of skip-gram pairs.

  Sentences are shuffled, grouped into ragged chunks, subsampled (when
  ``keep_probs`` is given), turned into pairs by ``window_pairs`` and rebatched
  to ``batch_size`` pairs. Call it once per epoch with a new ``seed`` for a new
  order and a new subsample.

  Args:
    sentences: list of list of int, word ids; ids 0..3 (the special tokens,
      ``<unk>`` included) must already be removed.
    window: int. m, the most context words taken on each side.
    batch_size: int. B, pairs per batch (the last batch may be smaller).
    keep_probs: optional float sequence with shape [V], see
      ``keep_probabilities``. None keeps every token.
    dynamic_window: bool. Draw each centre word's window in 1..m, as the
      reference does; False takes m for every centre word.
    shuffle: bool. Shuffle the sentence order.
    seed: int. Seed of the shuffle and of the subsampling and window draws.
    sentences_per_chunk: int. Sentences turned into pairs at once.

  Returns:
    A tf.data.Dataset of (centres, contexts, words): int32 [B], int32 [B] and
    float32 [B]. ``words`` spreads the tokens a chunk read (before subsampling)
    evenly over its pairs: summed over batches it counts the words read.
  """
  lengths = np.array([len(s) for s in sentences], np.int64)
  ragged = tf.RaggedTensor.from_row_lengths(
      np.concatenate([np.zeros(0, np.int32)] + [
          np.asarray(s, np.int32) for s in sentences]), lengths)
  ds = tf.data.Dataset.from_tensor_slices(ragged)
  if shuffle:
    ds = ds.shuffle(len(sentences), seed=seed)
  ds = ds.ragged_batch(sentences_per_chunk).enumerate()
  keep = None if keep_probs is None else tf.constant(keep_probs, tf.float32)

  def to_pairs(chunk_index, chunk):
    words_read = tf.cast(tf.size(chunk.flat_values), tf.float32)
    chunk_seed = tf.stack([tf.constant(seed, tf.int64), chunk_index])
    if keep is not None:
      chunk = subsample(chunk, keep, chunk_seed)
    window_seed = (tf.random.experimental.stateless_fold_in(chunk_seed, 1)
                   if dynamic_window else None)
    centres, contexts = window_pairs(chunk, window, window_seed)
    num_pairs = tf.shape(centres)[0]
    per_pair = words_read / tf.cast(tf.maximum(num_pairs, 1), tf.float32)
    return centres, contexts, tf.fill([num_pairs], per_pair)

  ds = ds.map(to_pairs, num_parallel_calls=tf.data.AUTOTUNE)
  return ds.rebatch(batch_size).prefetch(tf.data.AUTOTUNE)
