r"""The retrieval baseline: captions test images with consensus-ranked
captions of their nearest training images (see im2txt_ext/retrieval.py).

  im2txt-retrieve --features=features/lite0_pooled.npy \
      --train_captions=data/scenes/captions_train.json \
      --captions=data/scenes/captions_test.json --output_dir=results/retrieval

Writes metrics.json and captions.json like im2txt-evaluate.
"""

import time

import numpy as np
from absl import flags

from im2txt_ext.cli import run
from im2txt_ext.errors import InputError

FLAGS = flags.FLAGS


def define_flags():
  """This command's flags (see im2txt_ext.cli)."""
  flags.DEFINE_string("features", None, "Pooled feature cache (from "
                      "im2txt-extract-features --kind=pooled) holding the "
                      "training and the evaluation images.")
  flags.DEFINE_string("train_captions", None, "Caption file of the training "
                      "images (the captions that can be retrieved).")
  flags.DEFINE_string("train_split", "train", "Use only training records of "
                      "this split where the file holds several.")
  flags.DEFINE_string("captions", None, "Caption file of the evaluation "
                      "images.")
  flags.DEFINE_string("split", "", "Use only evaluation records of this split "
                      "(e.g. test) where the file holds several.")
  flags.DEFINE_integer("neighbours", 10, "Nearest training images whose "
                       "captions are candidates.", lower_bound=1)
  flags.DEFINE_enum("consensus", "cider", ["cider", "bleu"], "Similarity that "
                    "ranks the candidates by their agreement with each other.")
  flags.DEFINE_integer("limit", 0, "Evaluate only the first N images (0 = "
                       "all).")
  flags.DEFINE_integer("show", 5, "Print this many images' captions.")
  flags.DEFINE_boolean("meteor", True, "Compute METEOR (needs Java).")
  flags.DEFINE_string("output_dir", None, "Where metrics.json and "
                      "captions.json go.")
  flags.mark_flags_as_required(["features", "train_captions", "captions",
                                "output_dir"])


def rows_of(records, image_ids, array, path):
  """float32 [N, D] features of the records' images, in record order."""
  row = {image_id: i for i, image_id in enumerate(image_ids)}
  missing = [r.image_id for r in records if r.image_id not in row]
  if missing:
    raise InputError(f"no features for {len(missing)} images (e.g. "
                     f"{missing[0]})", path)
  if array.ndim != 2:
    raise InputError(f"features of shape {array.shape[1:]} per image; the "
                     "retrieval baseline needs pooled [D] vectors", path)
  return np.asarray(array[[row[r.image_id] for r in records]], np.float32)


def main(argv):
  del argv
  from im2txt_ext.data import readers
  from im2txt_ext.encoders.features import load_features
  from im2txt_ext.metrics import caption_metrics, save_evaluation
  from im2txt_ext.retrieval import ConsensusRetrieval

  train = readers.read_dataset(FLAGS.train_captions)
  if FLAGS.train_split and any(r.split for r in train):
    train = readers.split_records(train, FLAGS.train_split)
  records = readers.read_dataset(FLAGS.captions)
  if FLAGS.split:
    records = readers.split_records(records, FLAGS.split, FLAGS.captions)
  records = records[:FLAGS.limit or None]
  image_ids, array = load_features(FLAGS.features)
  started = time.time()
  retrieval = ConsensusRetrieval(
      rows_of(train, image_ids, array, FLAGS.features),
      [r.captions for r in train], FLAGS.neighbours, FLAGS.consensus)
  captions = retrieval.caption(rows_of(records, image_ids, array,
                                       FLAGS.features), progress=True)
  candidates = {r.image_id: c for r, c in zip(records, captions)}
  seconds = time.time() - started
  metrics = caption_metrics(candidates, {r.image_id: r.captions
                                         for r in records},
                            meteor=FLAGS.meteor)
  metrics.update(images=len(records), seconds=round(seconds, 2),
                 method=f"retrieval-{FLAGS.consensus}",
                 neighbours=FLAGS.neighbours)
  save_evaluation(FLAGS.output_dir, records, candidates, metrics, FLAGS.show)


def entry():
  define_flags()
  run(main)


if __name__ == "__main__":
  entry()
