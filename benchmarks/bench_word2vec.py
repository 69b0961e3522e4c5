"""Skip-gram training speed, in corpus words per second, for both losses.

  python -m benchmarks.bench_word2vec  # from the repository root

Trains on a synthetic corpus (Zipf-distributed words, 5,000-word vocabulary,
~60k words) for two epochs and reports the second (the first includes
tf.function tracing). Prints one JSON line per figure; about 30 s on 2 CPU
cores.
"""

import numpy as np

from benchmarks import common
from embeddings import word2vec

VOCAB_SIZE = 5000  # Distinct words of the synthetic corpus.
NUM_SENTENCES = 5000  # Sentences of 8 to 16 words.


def synthetic_corpus(seed=0):
  """Sentences of words w0..w4999 drawn with Zipf frequencies (p ~ 1/rank)."""
  rng = np.random.default_rng(seed)
  probs = 1.0 / np.arange(1, VOCAB_SIZE + 1)
  probs /= probs.sum()
  lengths = rng.integers(8, 17, size=NUM_SENTENCES)
  ids = rng.choice(VOCAB_SIZE, size=lengths.sum(), p=probs)
  words = np.array([f"w{i}" for i in range(VOCAB_SIZE)])[ids]
  return [list(s) for s in np.split(words, np.cumsum(lengths)[:-1])]


def main():
  corpus = synthetic_corpus()
  for loss in word2vec.LOSSES:
    config = word2vec.Word2VecConfig(loss=loss, min_count=1, epochs=2)
    result = word2vec.train(corpus, config, verbose=False)
    common.emit(f"word2vec_{loss}_words_per_s",
                result.words_per_second[-1], "words/s", config.batch_size,
                {"vocab": len(result.vocab), "dim": config.dim,
                 "window": config.window, "negatives": config.negatives,
                 "subsample": config.subsample,
                 "corpus_words": sum(map(len, corpus))})


if __name__ == "__main__":
  main()
