"""Times feature extraction by stage: image pipeline, encoder, and both.

  python -m benchmarks.bench_data_encoder \
    --images=../shared/data/flickr8k/images --encoder=efficientnet_lite0 \
    --weights=none --count=256 --batch_size=32

Prints images/s of (1) decoding and resizing alone, (2) the encoder alone on
one cached batch, (3) `extract_features` end to end into a temporary file.
Takes about half a minute for 256 images at 224x224 on a 2-core CPU.
"""

import os
import tempfile
import time

from absl import app
from absl import flags
import tensorflow as tf

from im2txt_ext.data.records import CaptionRecord
from im2txt_ext.encoders import backbones
from im2txt_ext.encoders import features

_IMAGES = flags.DEFINE_string("images", None, "Directory of JPEG images.",
                              required=True)
_ENCODER = flags.DEFINE_enum("encoder", "efficientnet_lite0",
                             list(backbones.ENCODERS), "Image encoder.")
_WEIGHTS = flags.DEFINE_string(
    "weights", "none", "'imagenet', 'none' or a weights file; speed does not "
    "depend on it.")
_COUNT = flags.DEFINE_integer("count", 256, "Images to encode.", lower_bound=1)
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 32, "Images per batch.",
                                   lower_bound=1)


def _rate(count, seconds, label):
  print(f"{label:<28} {count / seconds:8.1f} images/s")


def main(argv):
  del argv  # Unused.
  names = sorted(os.listdir(_IMAGES.value))[:_COUNT.value]
  records = [CaptionRecord(n, os.path.join(_IMAGES.value, n), [])
             for n in names]
  weights = None if _WEIGHTS.value == "none" else _WEIGHTS.value
  encoder = backbones.build_encoder(_ENCODER.value, weights)
  size = encoder.input_shape[1]

  dataset = features.image_dataset([r.image_path for r in records], size,
                                   _BATCH_SIZE.value)
  started = time.perf_counter()
  batch = None
  for _, batch in dataset:
    pass
  _rate(len(records), time.perf_counter() - started, "decode + resize")

  encode = tf.function(lambda images: encoder(images, training=False))
  encode(batch)  # Traces once.
  repeats = max(1, len(records) // len(batch))
  started = time.perf_counter()
  for _ in range(repeats):
    encode(batch)
  _rate(repeats * len(batch), time.perf_counter() - started, "encoder")

  with tempfile.TemporaryDirectory() as tmp:
    result = features.extract_features(
        records, encoder, os.path.join(tmp, "features.npy"),
        batch_size=_BATCH_SIZE.value, progress=False)
  _rate(result["encoded"], result["seconds"], "extract_features")


if __name__ == "__main__":
  app.run(main)
