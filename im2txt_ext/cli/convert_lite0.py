"""Former name of `im2txt-convert-efficientnet-lite`
(im2txt_ext.cli.convert_efficientnet_lite), kept as an alias: the same
flags, --encoder defaulting to efficientnet_lite0.

  im2txt-convert-lite0 --output=lite0.weights.h5
"""

from im2txt_ext.cli import run
from im2txt_ext.cli.convert_efficientnet_lite import main


def entry():
  run(main)


if __name__ == "__main__":
  entry()
