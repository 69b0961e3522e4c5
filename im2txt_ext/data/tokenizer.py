"""Caption tokenisation that needs no downloaded data (no NLTK punkt).

Lower-cases, splits off punctuation and drops it; keeps apostrophes inside
words ("man's" stays one token) and hyphenated words ("t-shirt").
"""

import re

_TOKEN = re.compile(r"[a-z0-9]+(?:['\-][a-z0-9]+)*")


def tokenize(text):
  """Splits a caption into lower-case word tokens, dropping punctuation.

  >>> tokenize("A man's red T-shirt, on a bench.")
  ['a', "man's", 'red', 't-shirt', 'on', 'a', 'bench']
  """
  return _TOKEN.findall(text.lower())
