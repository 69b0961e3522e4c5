"""CIDEr-D (Vedantam et al. 2015), vectorised: the reward of self-critical
training and the consensus of the retrieval baseline.

Shape letters: C candidate captions, R reference slots per image, N n-gram
orders (1..4), E n-gram entries.

The score of candidate c of image i with references s_1..s_m is

  CIDEr-D(c) = 10 / (N m) * sum_n sum_j exp(-(l_c - l_j)^2 / (2 sigma^2))
               * sum_g min(g_n(c), g_n(s_j)) g_n(s_j) / (|g_n(c)| |g_n(s_j)|)

where g_n is the vector of tf-idf weights of the n-grams,
tf * (log |I| - log max(1, df)), df the number of corpus images whose
references hold the n-gram and |I| the number of corpus images. It is
pycocoevalcap's ``Cider`` (the CIDEr-D variant) up to float rounding,
quirks included: the length l is the number of bigrams (words - 1), and the clip
min(.) compares tf-idf weights. pycocoevalcap takes its corpus from the
images being scored; here the corpus is given once (the training references
for rewards) and its document frequencies are computed once, so scoring a
batch costs a few array operations instead of Python loops over n-grams.
Give the scored images' references as the corpus to reproduce
pycocoevalcap's numbers.

An n-gram is one uint64: 16 bits per word, so the corpus and one call's
unseen candidate words may hold at most 65,534 distinct words. The corpus
costs 8 + 2 R bytes per distinct (image, n-gram) pair.
"""

import numpy as np

from im2txt_ext.errors import InputError

ORDERS = 4  # N: CIDEr-D scores 1- to 4-grams.
_BITS = 16  # Bits per word in an n-gram key.
_MAX_WORDS = (1 << _BITS) - 2  # Word ids 0.._MAX_WORDS - 1; 0 marks "none".


def _ngram_counts(words, keep):
  """The distinct n-grams of each row with their counts.

  Args:
    words: int [C, T] word ids.
    keep: bool [C, T]; the words of row c are words[c][keep[c]], in order.
  Returns:
    (rows, keys, orders, counts), each [E]: the row, uint64 key, order - 1
    and count of every distinct n-gram of every row, sorted by (row, key).
  """
  rows, cols = np.nonzero(keep)
  lengths = keep.sum(axis=1)
  offsets = np.cumsum(keep, axis=1)[rows, cols] - 1  # Position in its row.
  digits = words[rows, cols].astype(np.uint64) + np.uint64(1)  # [W]
  key = np.zeros_like(digits)
  parts = []
  for n in range(1, ORDERS + 1):
    shifted = np.zeros_like(digits)  # digits[p + n - 1]
    shifted[:len(digits) - n + 1] = digits[n - 1:]
    key = (key << np.uint64(_BITS)) | shifted
    valid = offsets + n <= lengths[rows]
    parts.append((rows[valid], key[valid], np.full(valid.sum(), n - 1)))
  rows, keys, orders = (np.concatenate(p) for p in zip(*parts))
  order = np.lexsort((keys, rows))
  rows, keys, orders = rows[order], keys[order], orders[order]
  starts = np.flatnonzero(_run_starts(rows, keys))
  counts = np.diff(np.append(starts, len(keys)))
  return rows[starts], keys[starts], orders[starts], counts


def _run_starts(a, b):
  """bool [E]: where the pair (a, b) differs from the previous entry's."""
  first = np.ones(len(a), bool)
  first[1:] = (a[1:] != a[:-1]) | (b[1:] != b[:-1])
  return first


def _lengths(keep):
  """Caption lengths as pycocoevalcap's CIDEr-D counts them, its bigrams
  (words - 1, at least 0), from a bool [C, T] keep mask: int [C]."""
  return np.maximum(keep.sum(axis=1) - 1, 0)


def _divide_nonzero(value, denominator):
  """value / denominator where the denominator is not 0, else value."""
  nonzero = denominator != 0
  return np.where(nonzero, value / np.where(nonzero, denominator, 1.0),
                  value)


class CiderD:
  """CIDEr-D of candidate captions against a fixed reference corpus.

  Args:
    references: dict image id -> list of reference captions, each a list of
      word tokens (e.g. from ``im2txt_ext.data.tokenizer.tokenize``). These
      images are the corpus of the document frequencies.
    sigma: float. Width of the length penalty (pycocoevalcap: 6).
  """

  def __init__(self, references, sigma=6.0):
    if not references or not all(references.values()):
      raise InputError("CIDEr-D needs at least one reference per image")
    self.sigma = sigma
    self.image_index = {image_id: i for i, image_id in enumerate(references)}
    self.words = {}
    captions = [c for refs in references.values() for c in refs]
    for caption in captions:
      for word in caption:
        self.words.setdefault(word, len(self.words))
    if len(self.words) > _MAX_WORDS:
      raise InputError(f"the references hold {len(self.words)} distinct "
                       f"words; CIDEr-D here takes at most {_MAX_WORDS}")
    num_images = len(references)
    counts = np.array([len(refs) for refs in references.values()])
    self.num_refs = counts  # m per image: int [I].
    slots = max(counts)
    ref_image = np.repeat(np.arange(num_images), counts)
    ref_slot = np.arange(len(captions)) - np.repeat(np.cumsum(counts) -
                                                    counts, counts)
    words, keep = self._pack([[self.words[w] for w in c] for c in captions])
    rows, keys, orders, term_freq = _ngram_counts(words, keep)

    # Document frequency: the images whose references hold each n-gram.
    order = np.lexsort((ref_image[rows], keys))
    distinct = _run_starts(keys[order], ref_image[rows][order])
    self._keys, df = np.unique(keys[order][distinct],
                               return_counts=True)  # [G], sorted
    self._log_images = np.log(float(num_images))
    self._idf = self._log_images - np.log(np.maximum(1.0, df))  # [G]

    # Norms and lengths of each reference, by image and slot.
    ngram = np.searchsorted(self._keys, keys)
    weight = term_freq * self._idf[ngram]
    self._ref_norm = np.zeros((num_images, slots, ORDERS))
    np.add.at(self._ref_norm, (ref_image[rows], ref_slot[rows], orders),
              weight ** 2)
    self._ref_norm = np.sqrt(self._ref_norm)  # float64 [I, R, N]
    self._ref_length = np.zeros((num_images, slots))
    self._ref_length[ref_image, ref_slot] = _lengths(keep)

    # Term frequencies by (image, n-gram): one row of R slots per pair.
    pair = ref_image[rows].astype(np.int64) * len(self._keys) + ngram
    self._pairs, inverse = np.unique(pair, return_inverse=True)  # [P]
    self._pair_tf = np.zeros((len(self._pairs), slots), np.uint16)
    self._pair_tf[inverse, ref_slot[rows]] = term_freq

  @staticmethod
  def _pack(id_lists):
    """Lists of word ids -> (int [C, T] ids, bool [C, T] keep mask)."""
    width = max([len(ids) for ids in id_lists] + [1])
    words = np.zeros((len(id_lists), width), np.int64)
    keep = np.zeros((len(id_lists), width), bool)
    for row, ids in enumerate(id_lists):
      words[row, :len(ids)] = ids
      keep[row, :len(ids)] = True
    return words, keep

  def word_table(self, words):
    """Word id of each of ``words`` (e.g. a vocabulary's), int64 [len];
    words unseen in the corpus get distinct new ids (they match nothing)."""
    unseen = {}
    ids = np.array([self.words[w] if w in self.words else
                    len(self.words) + unseen.setdefault(w, len(unseen))
                    for w in words], np.int64)
    if len(self.words) + len(unseen) > _MAX_WORDS:
      raise InputError(f"more than {_MAX_WORDS} distinct words to score")
    return ids

  def images(self, image_ids):
    """Corpus index of each image id, int64 [C]."""
    try:
      return np.array([self.image_index[i] for i in image_ids], np.int64)
    except KeyError as e:
      raise InputError(f"no references for image {e.args[0]!r}") from None

  def _encode(self, captions):
    """Captions (lists of word tokens) -> (int [C, T] ids, bool [C, T])."""
    table = {}
    for caption in captions:
      for word in caption:
        table.setdefault(word, len(table))
    ids = self.word_table(list(table))
    return self._pack([[ids[table[w]] for w in c] for c in captions])

  def _lookup(self, keys):
    """Corpus lookup of n-gram keys [E]: (index into the corpus n-grams,
    whether the corpus holds it, idf), each [E]. Unseen n-grams get the
    largest idf, log |I|."""
    ngram = np.minimum(np.searchsorted(self._keys, keys), len(self._keys) - 1)
    known = self._keys[ngram] == keys
    idf = np.where(known, self._idf[ngram], self._log_images)
    return ngram, known, idf

  def _length_penalty(self, delta):
    """exp(-delta^2 / (2 sigma^2)) of length differences delta."""
    return np.e ** (-(delta ** 2) / (2 * self.sigma ** 2))

  def score(self, image_ids, captions):
    """CIDEr-D of captions (lists of word tokens) of the given images,
    float64 [C]."""
    words, keep = self._encode(captions)
    return self.score_ids(self.images(image_ids), words, keep)

  def pairwise(self, captions):
    """CIDEr-D of each caption with each other one as its only reference,
    with this corpus's document frequencies: float64 [C, C].

    CIDEr-D against m references is the mean of the single-reference
    scores, so row c averaged over the other columns is caption c's
    CIDEr-D against all the others: the consensus of Devlin et al. 2015.
    Both captions' n-grams take the same idf, so the clipped product is
    idf^2 min(a, b) b for term frequencies a, b, and min(a, b) b =
    sum_{t >= 1} [a >= t] [b >= t] b turns the numerator into matrix
    products.
    """
    num = len(captions)
    words, keep = self._encode(captions)
    rows, keys, orders, term_freq = _ngram_counts(words, keep)
    if not len(keys):
      return np.zeros([num, num])
    _, _, idf = self._lookup(keys)
    distinct, column = np.unique(keys, return_inverse=True)
    column = column.reshape(-1)
    norm = np.sqrt(np.bincount(rows * ORDERS + orders,
                               (term_freq * idf) ** 2, num * ORDERS))
    norm = norm.reshape(num, ORDERS).T  # [N, C]
    value = np.zeros((ORDERS, num, num))
    for at_least in range(1, int(term_freq.max()) + 1):
      entry = term_freq >= at_least
      for n in range(ORDERS):
        pick = entry & (orders == n)
        clipped = np.zeros((num, len(distinct)))
        clipped[rows[pick], column[pick]] = idf[pick]
        weight = np.zeros_like(clipped)
        weight[rows[pick], column[pick]] = idf[pick] * term_freq[pick]
        value[n] += clipped @ weight.T
    value = _divide_nonzero(value, norm[:, :, None] * norm[:, None, :])
    length = _lengths(keep)
    penalty = self._length_penalty(length[:, None] - length[None, :])
    return 10.0 * value.sum(axis=0) * penalty / ORDERS

  def score_ids(self, images, words, keep):
    """CIDEr-D of captions given as corpus word ids.

    Args:
      images: int [C], corpus index of each caption's image.
      words: int [C, T], word ids (from ``words`` or ``word_table``).
      keep: bool [C, T]; caption c is words[c][keep[c]].
    Returns:
      float64 [C].
    """
    num = len(images)
    if not num:
      return np.zeros([0])
    rows, keys, orders, term_freq = _ngram_counts(words, keep)
    ngram, known, idf = self._lookup(keys)
    weight = term_freq * idf  # g_n(c), [E]
    cell = rows * ORDERS + orders
    norm = np.sqrt(np.bincount(cell, weight ** 2, num * ORDERS))

    # The references' weights of the candidate's n-grams: g_n(s_j), [E, R].
    pair = images[rows] * len(self._keys) + ngram
    at = np.minimum(np.searchsorted(self._pairs, pair), len(self._pairs) - 1)
    found = known & (self._pairs[at] == pair)
    ref_weight = self._pair_tf[at[found]] * idf[found][:, None]
    clipped = np.minimum(weight[found][:, None], ref_weight) * ref_weight
    slots = ref_weight.shape[1]
    value = np.stack([np.bincount(cell[found], clipped[:, j], num * ORDERS)
                      for j in range(slots)], axis=-1)
    value = value.reshape(num, ORDERS, slots)  # [C, N, R]
    value = _divide_nonzero(value, norm.reshape(num, ORDERS)[..., None] *
                            self._ref_norm[images].transpose(0, 2, 1))
    delta = _lengths(keep)[:, None] - self._ref_length[images]  # [C, R]
    value = value * self._length_penalty(delta)[:, None]
    return 10.0 * value.sum(axis=(1, 2)) / (ORDERS * self.num_refs[images])
