"""Input pipeline and feature extraction speed.

  make bench-data       (python -m benchmarks.bench_data [--images=DIR])

Prints images/s of (1) the training tf.data pipeline alone (read, decode,
resize to 224, caption padding, bucketing, batching), and (2) feature
extraction with one backbone (EfficientNet-Lite0, 224x224, random weights:
speed does not depend on them), end to end into a temporary cache. Without
--images it uses 256 synthetic scene images saved as 224x224 JPEGs. Then
(3) the memory a training process takes to load a features file of
--features_mb into its table (``FeatureLookup``), in a fresh process (Linux
/proc): the peak growth of its resident memory, the file's pages it read
(page cache: shared by processes, reclaimable) and its own memory after,
each over the file's size.
"""

import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

from absl import app, flags

from benchmarks import common
from im2txt_ext.data import pipeline, scenes
from im2txt_ext.data.records import CaptionRecord
from im2txt_ext.data.vocabulary import Vocabulary
from im2txt_ext.encoders import backbones, features

FLAGS = flags.FLAGS
flags.DEFINE_string("images", None, "Folder of JPEG images to read (default: "
                    "synthetic scenes written to a temporary folder).")
flags.DEFINE_integer("count", 256, "Images to use.")
flags.DEFINE_integer("batch_size", 32, "Images per batch.")
flags.DEFINE_string("encoder", "efficientnet_lite0", "Backbone to time.")
flags.DEFINE_integer("features_mb", 512, "Size of the features file whose "
                     "loading is measured (float16 rows of 196x1280).")

# Run in a fresh process: loads the features file argv[1] into a
# FeatureLookup and prints its memory growth (MiB) from /proc/self/status.
_LOAD_PROBE = """
import json, sys
import numpy as np
from im2txt_ext.data import pipeline
def status():
  with open("/proc/self/status") as f:
    fields = dict(line.split(":", 1) for line in f)
  return {k: int(fields[k].split()[0]) / 1024
          for k in ("VmRSS", "VmHWM", "RssAnon", "RssFile")}
table = np.load(sys.argv[1], mmap_mode="r")
before = status()
lookup = pipeline.FeatureLookup([str(i) for i in range(len(table))], table)
after = status()
print(json.dumps({"peak": after["VmHWM"] - before["VmRSS"],
                  "file_pages": after["RssFile"] - before["RssFile"],
                  "own_after": after["RssAnon"] - before["RssAnon"]}))
"""


def _synthetic_images(folder, count):
  import numpy as np
  rng = np.random.default_rng(0)
  paths = []
  for i in range(count):
    image, _ = scenes.render_scene(rng, 224)
    path = os.path.join(folder, f"scene_{i:04d}.jpg")
    image.save(path, quality=90)
    paths.append(path)
  return paths


def main(argv):
  del argv
  with tempfile.TemporaryDirectory() as tmp:
    if FLAGS.images:
      names = sorted(os.listdir(FLAGS.images))[:FLAGS.count]
      paths = [os.path.join(FLAGS.images, n) for n in names]
    else:
      paths = _synthetic_images(tmp, FLAGS.count)
    records = [CaptionRecord(os.path.basename(p), p,
                             ["a red circle above a blue square"])
               for p in paths]
    vocab = Vocabulary.build([["a", "red", "circle", "above", "blue",
                               "square"]])
    config = pipeline.PipelineConfig(batch_size=FLAGS.batch_size,
                                     image_size=224)

    def read_all():
      ds = pipeline.batched(pipeline.from_records(records, vocab), config,
                            training=False)
      return sum(int(b["image"].shape[0]) for b in ds)
    seconds = common.time_call(read_all, warmup=1, min_seconds=2.0)
    common.emit("input_pipeline_decode_resize", len(records) / seconds,
                "images/s", FLAGS.batch_size, {"image_size": 224,
                                               "images": len(records)})

    encoder = backbones.build_encoder(FLAGS.encoder, None)
    started = time.perf_counter()
    result = features.extract_features(
        records, encoder, os.path.join(tmp, "features.npy"),
        batch_size=FLAGS.batch_size, progress=False)
    common.emit(f"extract_features_{FLAGS.encoder}",
                result["encoded"] / result["seconds"], "images/s",
                FLAGS.batch_size, {"image_size": 224, "images": len(records),
                                   "kind": "pooled"},
                wall_seconds=round(time.perf_counter() - started, 2))

    rows = max(1, FLAGS.features_mb * 2**20 // (196 * 1280 * 2))
    path = os.path.join(tmp, "load.npy")
    table = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16,
                                      shape=(rows, 196, 1280))
    table[:] = 1.0
    table.flush()
    del table
    size_mb = os.path.getsize(path) / 2**20
    probe = subprocess.run([sys.executable, "-c", _LOAD_PROBE, path],
                           capture_output=True, text=True, check=True)
    growth = json.loads(probe.stdout.strip().splitlines()[-1])
    common.emit("load_features_peak_memory", growth["peak"] / size_mb,
                "x file size", None, {"features_mb": round(size_mb),
                                      "rows": rows},
                file_pages=round(growth["file_pages"] / size_mb, 2),
                own_after=round(growth["own_after"] / size_mb, 2))


if __name__ == "__main__":
  app.run(main)
