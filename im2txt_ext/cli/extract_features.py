r"""Encodes a dataset's images once and caches the features for training.

  im2txt-extract-features --encoder=efficientnet_lite0 --weights=imagenet \
    --captions=$DATA/Flickr8k.token.txt --images=$DATA/images \
    --kind=spatial --output=features/lite0_spatial.npy

  # A 14x14 attention grid, as VGG's conv5 gave the paper at 224 px:
  im2txt-extract-features --encoder=efficientnet_lite2 --image_size=448 ...

  # The pooled features of spatial ones, without encoding the images again:
  im2txt-extract-features --from_spatial=features/lite0_spatial.npy \
    --output=features/lite0_pooled.npy

A killed run resumes when started again with the same flags.
"""

import os

from absl import app
from absl import flags

from im2txt_ext.cli import run
from im2txt_ext.data.records import CaptionRecord
from im2txt_ext.encoders import specs
from im2txt_ext.errors import InputError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".bmp")

FLAGS = flags.FLAGS


def define_flags():
  """This command's flags (see im2txt_ext.cli)."""
  flags.DEFINE_enum(
      "encoder", "efficientnet_lite0", list(specs.ENCODERS),
      "Image encoder.")
  flags.DEFINE_string(
      "weights", "imagenet",
      "Encoder weights: 'imagenet', 'none' (random) or a weights file path.")
  flags.DEFINE_string(
      "images", None, "Directory of images: with --captions, where the "
      "captions file's images are; alone, encode every image file in it.")
  flags.DEFINE_list(
      "captions", None, "Comma-separated captions files; their images are "
      "encoded in file order, each image once.")
  flags.DEFINE_enum(
      "kind", "pooled", list(specs.OUTPUTS),
      "pooled: one [D] vector per image; spatial: an [L, D] map per image.")
  flags.DEFINE_string(
      "output", None, "Features file to write (.npy); its index goes beside "
      "it as .json.", required=True)
  flags.DEFINE_integer(
      "batch_size", 32, "Images per encoder call.", lower_bound=1)
  flags.DEFINE_integer(
      "image_size", None, "Image side in pixels. Defaults to the encoder's "
      "native side (efficientnet_lite0/1/2: 224/240/260). A larger side gives "
      "a finer spatial map: ceil(S/32) a side for the EfficientNets, e.g. "
      "14x14 at 448, the grid VGG's conv5 gave Show, Attend and Tell.")
  flags.DEFINE_boolean(
      "skip_bad_images", False, "Leave zero rows for missing or corrupt image "
      "files (listed in the index) instead of stopping with an error.")
  flags.DEFINE_string(
      "from_spatial", None, "A finished spatial features file: write its "
      "pooled features (each row's mean over its locations, the encoder's "
      "pooled output) to --output instead of encoding images.")
  flags.DEFINE_integer(
      "limit", None, "Encode only the first N images, for smoke runs and "
      "timing.", lower_bound=1)


def directory_records(images_dir):
  """One CaptionRecord (no captions) per image file of a directory, sorted."""
  if not os.path.isdir(images_dir):
    raise InputError("not a directory", images_dir)
  names = sorted(n for n in os.listdir(images_dir)
                 if n.lower().endswith(IMAGE_EXTENSIONS))
  if not names:
    raise InputError("no image files in directory", images_dir)
  return [CaptionRecord(n, os.path.join(images_dir, n), []) for n in names]


def _records():
  if FLAGS.captions:
    # Imported here: only captions files need the readers.
    from im2txt_ext.data.readers import read_dataset
    records = {}
    for path in FLAGS.captions:
      for record in read_dataset(path, images_dir=FLAGS.images):
        records.setdefault(record.image_id, record)
    return list(records.values())
  if FLAGS.images:
    return directory_records(FLAGS.images)
  raise InputError("give --images (a directory) or --captions (a file)")


def main(argv):
  # Imported here: --help and flag errors need no TensorFlow.
  from im2txt_ext.encoders import backbones, features
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if FLAGS.from_spatial:
    if FLAGS.kind != "pooled":
      raise InputError("--from_spatial writes pooled features; drop "
                       f"--kind={FLAGS.kind}")
    index = features.pool_features(FLAGS.from_spatial, FLAGS.output)
    print(f"{FLAGS.output}: {index['rows_done']} rows, the mean over the "
          f"locations of {FLAGS.from_spatial}")
    return
  records = _records()[:FLAGS.limit]
  weights = None if FLAGS.weights == "none" else FLAGS.weights
  encoder = backbones.build_encoder(FLAGS.encoder, weights, FLAGS.image_size)
  result = features.extract_features(
      records, encoder, FLAGS.output, FLAGS.kind, FLAGS.batch_size,
      FLAGS.skip_bad_images, metadata={"weights": FLAGS.weights})
  if result["skipped"]:
    print(f"skipped {len(result['skipped'])} bad images (zero rows, listed "
          f"in {features.index_path(FLAGS.output)})")
  print(f"{FLAGS.output}: {result['rows_done']} rows; encoded "
        f"{result['encoded']} images in {result['seconds']:.1f} s, "
        f"{result['images_per_second']:.1f} images/s")


def entry():
  define_flags()
  run(main)


if __name__ == "__main__":
  entry()
