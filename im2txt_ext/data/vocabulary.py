"""Word vocabulary with the four special tokens, saved as a plain text file.

File format: one ``word<TAB>count`` line per word, ids in line order; the
special tokens come first with count 0.
"""

import collections
import os

from im2txt_ext.errors import InputError

PAD, START, END, UNK = "<pad>", "<start>", "<end>", "<unk>"
SPECIAL_TOKENS = (PAD, START, END, UNK)
# Words a caption should not end with: determiners, conjunctions and
# prepositions (self-critical.pytorch's ``bad_endings``, with "and", "or",
# "an", "its", "their", "into", "onto", "near", "under", "by"); the search's
# ``bad_ending_ids`` rule.
BAD_ENDINGS = ("a", "an", "the", "this", "that", "his", "her", "its",
               "their", "and", "or", "with", "in", "on", "of", "at", "to",
               "for", "into", "onto", "near", "under", "by")

SpecialTokens = collections.namedtuple("SpecialTokens",
                                       "start end pad banned")
SpecialTokens.__doc__ = """The special words' ids, as the searches,
training, SCST, inference, the export and the figures use them: <start>,
<end>, <pad>, and ``banned``, the words a caption never holds (the
library's captioners ban <unk>); made by ``Vocabulary.special_tokens``."""


class Vocabulary:
  """Maps words to integer ids and back.

  Args:
    words: list of str. Ordinary words, most frequent first; the special
      tokens ``<pad> <start> <end> <unk>`` get ids 0..3 before them.
    counts: optional list of int, the corpus count of each word.
  """

  def __init__(self, words, counts=None):
    words = list(words)
    duplicated = [w for w, n in collections.Counter(words).items() if n > 1]
    if duplicated or any(w in SPECIAL_TOKENS for w in words):
      raise ValueError(f"vocabulary words must be unique and not special: "
                       f"{duplicated[:5]}")
    self.words = list(SPECIAL_TOKENS) + words
    self.counts = [0] * len(SPECIAL_TOKENS) + list(counts or [0] * len(words))
    self._ids = {w: i for i, w in enumerate(self.words)}

  pad_id = 0
  start_id = 1
  end_id = 2
  unk_id = 3

  @classmethod
  def special_tokens(cls, ban_unknown=True):
    """The ``SpecialTokens`` of every vocabulary; <unk> banned unless
    ``ban_unknown`` is False."""
    return SpecialTokens(cls.start_id, cls.end_id, cls.pad_id,
                         (cls.unk_id,) if ban_unknown else ())

  def __len__(self):
    return len(self.words)

  def __contains__(self, word):
    return word in self._ids

  def word_to_id(self, word):
    return self._ids.get(word, self.unk_id)

  def id_to_word(self, word_id):
    return self.words[word_id]

  def ids_of(self, words):
    """Ids of those of ``words`` that are in the vocabulary."""
    return [self._ids[w] for w in words if w in self._ids]

  def encode(self, tokens, add_start_end=True):
    """Token list -> id list, unknown words mapped to ``<unk>``."""
    ids = [self.word_to_id(t) for t in tokens]
    return [self.start_id] + ids + [self.end_id] if add_start_end else ids

  def decode(self, ids):
    """Id list -> words, stopping at ``<end>``, without ``<start>`` and
    ``<pad>``."""
    words = []
    for i in ids:
      i = int(i)
      if i == self.end_id:
        break
      if i in (self.start_id, self.pad_id):
        continue
      words.append(self.words[i])
    return words

  @classmethod
  def build(cls, token_lists, min_count=1, max_size=None):
    """Builds a vocabulary from tokenised captions.

    Args:
      token_lists: iterable of list of str.
      min_count: int. Words seen fewer times map to ``<unk>``.
      max_size: optional int. Keep at most this many ordinary words.
    """
    counter = collections.Counter()
    for tokens in token_lists:
      counter.update(tokens)
    # Most frequent first, ties broken alphabetically, so builds are stable.
    ranked = sorted((w for w, c in counter.items() if c >= min_count),
                    key=lambda w: (-counter[w], w))
    ranked = [w for w in ranked if w not in SPECIAL_TOKENS][:max_size]
    return cls(ranked, [counter[w] for w in ranked])

  def save(self, path):
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
      for word, count in zip(self.words, self.counts):
        f.write(f"{word}\t{count}\n")
    os.replace(tmp, path)

  @classmethod
  def load(cls, path):
    if not os.path.exists(path):
      raise InputError("vocabulary file not found", path)
    words, counts = [], []
    with open(path, encoding="utf-8") as f:
      for line_no, line in enumerate(f, 1):
        parts = line.rstrip("\n").split("\t")
        if len(parts) != 2 or not parts[0] or not parts[1].isdigit():
          raise InputError(f"expected 'word<TAB>count', got {line.strip()!r}",
                           path, line_no)
        words.append(parts[0])
        counts.append(int(parts[1]))
    if tuple(words[:len(SPECIAL_TOKENS)]) != SPECIAL_TOKENS:
      raise InputError(f"must start with {' '.join(SPECIAL_TOKENS)}", path)
    n = len(SPECIAL_TOKENS)
    return cls(words[n:], counts[n:])
