r"""im2txt-style preprocessing: captions + images -> vocabulary and TFRecords.

  im2txt-build-tfrecords --captions=data/scenes/captions_train.json \
      --images_dir=data/scenes/images --output_dir=data/scenes/tfrecords
"""

import os

from absl import flags

from im2txt_ext.cli import run
from im2txt_ext.data import readers
from im2txt_ext.data.tokenizer import tokenize
from im2txt_ext.data.vocabulary import Vocabulary

FLAGS = flags.FLAGS


def define_flags():
  """This command's flags (see im2txt_ext.cli)."""
  flags.DEFINE_multi_string("captions", None, "Caption file(s) in any "
                            "supported format (COCO JSON, Karpathy JSON, "
                            "Flickr token file, captions.txt CSV). Repeat "
                            "for several.")
  flags.DEFINE_string("images_dir", None, "Folder of the images the caption "
                      "files name.")
  flags.DEFINE_string("output_dir", None, "Folder for vocab.txt and the "
                      "{split}-SSSSS-of-NNNNN shards.")
  flags.DEFINE_string("vocab", None, "Existing vocabulary file to use instead "
                      "of building one from the training captions.")
  flags.DEFINE_integer("min_word_count", 4, "Words seen fewer times in the "
                       "training captions map to <unk> (im2txt: 4).")
  flags.DEFINE_integer("num_shards", 8, "Shards per split.")
  flags.DEFINE_boolean("skip_bad_inputs", False, "Skip and count bad captions "
                       "and images instead of stopping at the first.")
  flags.mark_flags_as_required(["captions", "images_dir", "output_dir"])


def main(argv):
  del argv
  from im2txt_ext.data import tfrecords  # TensorFlow: not for --help.
  on_error = "skip" if FLAGS.skip_bad_inputs else "raise"
  report = readers.SkipReport()
  records = []
  for path in FLAGS.captions:
    records.extend(readers.read_dataset(path, FLAGS.images_dir, on_error,
                                        report))
  print(f"read {len(records)} images; {report.summary()}")
  os.makedirs(FLAGS.output_dir, exist_ok=True)
  by_split = {}
  for record in records:
    by_split.setdefault(record.split or "train", []).append(record)
  if FLAGS.vocab:
    vocab = Vocabulary.load(FLAGS.vocab)
  else:
    vocab = Vocabulary.build(
        (tokenize(c) for r in by_split.get("train", records)
         for c in r.captions), min_count=FLAGS.min_word_count)
  vocab.save(os.path.join(FLAGS.output_dir, "vocab.txt"))
  print(f"vocabulary: {len(vocab)} words")
  for split, split_records in sorted(by_split.items()):
    paths, written, bad = tfrecords.write_tfrecords(
        split_records, vocab, os.path.join(FLAGS.output_dir, split),
        FLAGS.num_shards, skip_bad_images=FLAGS.skip_bad_inputs)
    skipped = f", skipped {len(bad)} bad images (first: {bad[0]})" if bad \
        else ""
    print(f"{split}: {written} captions in {len(paths)} shards{skipped}")


def entry():
  define_flags()
  run(main)


if __name__ == "__main__":
  entry()
