"""Generates the embedded synthetic scene dataset (COCO captions format).

  im2txt-scenes --output_dir=data/scenes
"""

from absl import flags

from im2txt_ext.cli import run
from im2txt_ext.data import scenes

FLAGS = flags.FLAGS


def define_flags():
  """This command's flags (see im2txt_ext.cli)."""
  flags.DEFINE_string("output_dir", "data/scenes",
                      "Folder that gets images/ and captions_{train,val,test}"
                      ".json.")
  flags.DEFINE_integer("num_train", 6000, "Training images.", lower_bound=1)
  flags.DEFINE_integer("num_val", 300, "Validation images.", lower_bound=1)
  flags.DEFINE_integer("num_test", 300, "Test images.", lower_bound=1)
  flags.DEFINE_integer("seed", 0, "Random seed; the same seed gives the same "
                       "dataset byte for byte.")
  # Below 16 pixels two shapes may find no place to be told apart.
  flags.DEFINE_integer("image_size", 64, "Image width and height in pixels.",
                       lower_bound=16)


def main(argv):
  del argv
  paths = scenes.generate(FLAGS.output_dir, FLAGS.num_train, FLAGS.num_val,
                          FLAGS.num_test, FLAGS.seed, FLAGS.image_size)
  for split, path in paths.items():
    print(f"{split}: {path}")


def entry():
  define_flags()
  run(main)


if __name__ == "__main__":
  entry()
