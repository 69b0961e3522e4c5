r"""Where the decoder looked: the attention figure of Show, Attend and Tell.

  python -m attention.visualize --run_dir=runs/soft --image=photo.jpg \
    --output=photo_attention.png

One panel shows the image with its caption; then, for each generated word,
the image under that step's attention map (weights [L] reshaped to the
encoder's h x w grid and upsampled bilinearly), titled with the word.

Shape letters: S image side, T caption length, L = h * w image locations.
"""

import math

import numpy as np
from absl import app
from absl import flags
from matplotlib.figure import Figure
from PIL import Image

from im2txt_ext.cli import run
from im2txt_ext.errors import InputError

COLUMNS = 5  # Panels per row of the figure.
PANEL_INCHES = 2.2  # Side of one panel.


def upsample(weights, grid, size):
  """Weights [L] -> float32 [S, S] map, bilinear over the h x w grid."""
  height, width = grid
  cells = np.asarray(weights, np.float32).reshape(height, width)
  return np.asarray(Image.fromarray(cells, mode="F").resize(
      (size, size), Image.BILINEAR))


def attention_figure(image, words, attention, grid, path):
  """Writes a PNG: the image, then one attention overlay per word.

  Args:
    image: uint8 [S, S, 3].
    words: list of str, the T' <= T generated words (one panel each).
    attention: float [T, L], the weights of each step.
    grid: (h, w) with h * w = L, the encoder's feature-map grid.
    path: str. The PNG to write.
  """
  image = np.asarray(image)
  attention = np.asarray(attention)
  if attention.shape[0] < len(words):
    raise ValueError(f"{len(words)} words but attention for only "
                     f"{attention.shape[0]} steps")
  if attention.shape[1] != grid[0] * grid[1]:
    raise ValueError(f"attention has {attention.shape[1]} locations, grid "
                     f"{grid} has {grid[0] * grid[1]}")
  panels = 1 + len(words)
  columns = min(panels, COLUMNS)
  rows = math.ceil(panels / columns)
  figure = Figure(figsize=(columns * PANEL_INCHES, rows * PANEL_INCHES))
  axes = figure.subplots(rows, columns, squeeze=False).ravel()
  for axis in axes:
    axis.axis("off")
  axes[0].imshow(image)
  axes[0].set_title(" ".join(words), fontsize=7, wrap=True)
  for axis, word, weights in zip(axes[1:], words, attention):
    axis.imshow(image)
    axis.imshow(upsample(weights, grid, image.shape[0]), cmap="jet",
                alpha=0.5, extent=(0, image.shape[1], image.shape[0], 0))
    axis.set_title(word, fontsize=10)
  figure.tight_layout()
  figure.savefig(path, format="png")


def caption_with_attention(model, image_bytes, beam_size=3, max_length=20):
  """Best beam caption of one image with its attention.

  Args:
    model: im2txt_ext.runs.TrainedModel of an attention decoder.
    image_bytes: bytes of a JPEG or PNG file.
  Returns (image uint8 [S, S, 3], words list of str, attention [T, L]).
  """
  # Imported here: loading TensorFlow is not needed to draw a figure.
  import tensorflow as tf

  from im2txt_ext import runs
  from im2txt_ext import search
  from im2txt_ext.data.pipeline import decode_image

  decoder, vocab = model.decoder, model.vocab
  if not decoder.has_attention:
    raise InputError(f"decoder {model.config.model.decoder!r} has no "
                     "attention to show", model.run_dir)
  try:
    image = decode_image(image_bytes, runs.image_size(model.config))
  except tf.errors.InvalidArgumentError:
    raise InputError("not a readable image") from None
  features = decoder.encode({"image": image[None]})
  result = search.beam_search(decoder, features, beam_size, max_length,
                              top_k=1,
                              tokens=vocab.special_tokens(ban_unknown=False))
  words = vocab.decode(result.ids[0, 0].numpy())  # Up to <end>, excluded.
  return (image.numpy().astype(np.uint8), words,
          result.attention[0, 0, :len(words)].numpy())


def define_flags():
  """The CLI's flags, defined when it runs (other CLIs use the same names)."""
  flags.DEFINE_string("run_dir", None, "Training run directory of an "
                      "attention decoder.", required=True)
  flags.DEFINE_string("image", None, "Image file (JPEG or PNG) to caption.",
                      required=True)
  flags.DEFINE_string("output", None, "PNG file to write the figure to.",
                      required=True)
  flags.DEFINE_integer("beam_size", 3, "Beams in the caption search.",
                       lower_bound=1)
  flags.DEFINE_integer("max_length", 20, "Most words in the caption, <end> "
                       "included.", lower_bound=1, upper_bound=500)


def _main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  values = flags.FLAGS
  from im2txt_ext.data.tfrecords import read_image_bytes
  from im2txt_ext.runs import TrainedModel
  model = TrainedModel(values.run_dir, which="best", with_encoder=True)
  image_bytes = read_image_bytes(values.image)  # Names a bad file.
  image, words, attention = caption_with_attention(
      model, image_bytes, values.beam_size, values.max_length)
  side = math.isqrt(attention.shape[1])
  if side * side != attention.shape[1]:
    raise InputError(f"{attention.shape[1]} attention locations are not a "
                     "square grid")
  attention_figure(image, words, attention, (side, side), values.output)
  print(f"{' '.join(words)}\nwrote {values.output}")


def visualize_main():
  """Console entry point; bad input is one line ``error: ...``, status 2."""
  define_flags()
  run(_main)


if __name__ == "__main__":
  visualize_main()
