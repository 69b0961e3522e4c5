"""The TFLite export against the SavedModel: size, latency and captions.

  make bench-lite       (python -m benchmarks.bench_lite, the scene Show
                         and Tell demo run on the scene test split)
  python -m benchmarks.bench_lite --run_dir=RUN --captions=FILE \
      --images_dir=DIR [--split=test] [--limit=N]

Exports a trained run as a SavedModel and as a TFLite export
(``im2txt_ext.lite``) per ``--weights`` option, with the same search (beam
3, 20 words, the library's decoding defaults), then captions every image
of the caption file with each and prints, as JSON lines, per weight option:
the files' sizes; one image's latency on this CPU (the image's bytes to
its best caption: PIL decoding and resizing, the encoder, the search; and
the encoder and the search alone), the median over the first images in
turn, timed in turns with the SavedModel's serving_default on the same
bytes; the best captions' agreement with the SavedModel's (identical
captions, and words equal position by position); and BLEU-4 and CIDEr-D
against the references, with the SavedModel's beside them. Exports go to
a temporary folder (``--output_dir`` keeps them).
"""

import itertools
import os
import tempfile

import numpy as np
import tensorflow as tf
from absl import app, flags

from benchmarks import common
from im2txt_ext import export, lite, lite_export, runs
from im2txt_ext.config import ExperimentConfig
from im2txt_ext.data import readers
from im2txt_ext.data.tfrecords import read_image_bytes
from im2txt_ext.metrics import caption_metrics

FLAGS = flags.FLAGS
flags.DEFINE_string("run_dir", "runs/demo", "Trained run directory.")
flags.DEFINE_string("captions", "data/scenes/captions_test.json",
                    "Caption file of the images captioned and scored.")
flags.DEFINE_string("images_dir", "data/scenes/images", "Folder of its "
                    "images.")
flags.DEFINE_string("split", "", "Only the records of this split.")
flags.DEFINE_integer("limit", 0, "Only the first N images (0: all).")
flags.DEFINE_list("weights", list(lite.WEIGHTS), "TFLite weight options.")
flags.DEFINE_integer("threads", os.cpu_count(), "The TFLite interpreter's "
                     "CPU threads.")
flags.DEFINE_integer("latency_images", 8, "Images timed in turn.")
flags.DEFINE_string("output_dir", "", "Keep the exports here (default: a "
                    "temporary folder).")

BEAM, LENGTH = 3, 20


def words_agreement(got, want):
  """Words equal position by position, over the longer caption of each
  pair, summed over pairs."""
  same = sum(a == b for g, w in zip(got, want)
             for a, b in zip(g.split(), w.split()))
  return same / max(sum(max(len(g.split()), len(w.split()))
                        for g, w in zip(got, want)), 1)


def saved_model_captions(serve, images):
  """Best captions of encoded images, 32 at a time."""
  captions = []
  for i in range(0, len(images), 32):
    out = serve(images=tf.constant(images[i:i + 32]))["captions"]
    captions += [c.decode() for c in out[:, 0].numpy()]
  return captions


def in_turns(fn, inputs):
  """A call of ``fn`` on the next of ``inputs`` at each call."""
  turns = itertools.cycle(inputs)
  return lambda: fn(next(turns))


def main(argv):
  del argv
  records = readers.read_dataset(FLAGS.captions, FLAGS.images_dir)
  if FLAGS.split:
    records = readers.split_records(records, FLAGS.split, FLAGS.captions)
  records = records[:FLAGS.limit or None]
  images = [read_image_bytes(r.image_path) for r in records]
  references = {r.image_id: r.captions for r in records}
  config = ExperimentConfig.load(os.path.join(FLAGS.run_dir,
                                              runs.CONFIG_FILE))
  sizes = {"run_dir": FLAGS.run_dir, "decoder": config.model.decoder,
           "encoder": config.model.encoder,
           "image_size": runs.image_size(config), "beam": BEAM,
           "max_length": LENGTH, "images": len(records),
           "captions": FLAGS.captions, "threads": FLAGS.threads}
  timed = images[:FLAGS.latency_images]

  def scores(captions):
    metrics = caption_metrics(dict(zip(references, captions)), references,
                              meteor=False)
    return metrics["BLEU-4"], metrics["CIDEr-D"]

  with tempfile.TemporaryDirectory() as temporary:
    folder = FLAGS.output_dir or temporary
    saved_model = os.path.join(folder, "saved_model")
    export.export(FLAGS.run_dir, saved_model, beam_size=BEAM,
                  max_length=LENGTH, top_k=1)
    serve = tf.saved_model.load(saved_model).signatures["serving_default"]
    want = saved_model_captions(serve, images)
    bleu4, cider = scores(want)
    megabytes = sum(os.path.getsize(os.path.join(path, name)) for path, _,
                    names in os.walk(saved_model) for name in names) / 1e6
    common.emit("saved_model_size", megabytes, "MB", None, sizes)
    common.emit("saved_model_bleu4", bleu4, "BLEU-4", None, sizes)
    common.emit("saved_model_cider_d", cider, "CIDEr-D", None, sizes)
    calls = {"saved_model": in_turns(
        lambda data: serve(images=tf.constant([data]))["captions"].numpy(),
        timed)}
    for weights in FLAGS.weights:
      path = os.path.join(folder, f"lite_{weights}")
      files = lite_export.export_tflite(FLAGS.run_dir, path,
                                        weights=weights, beam_size=BEAM,
                                        max_length=LENGTH, top_k=1)
      captioner = lite.LiteCaptioner(path, FLAGS.threads)
      got = [c[0]["caption"] for c in captioner.caption(images)]
      tags = dict(weights=weights)
      common.emit("lite_size", sum(files.values()) / 1e6, "MB", None, sizes,
                  **tags, encoder_mb=round(files[lite.ENCODER_FILE] / 1e6, 3),
                  step_mb=round(files[lite.STEP_FILE] / 1e6, 3))
      common.emit("lite_agreement", np.mean([a == b for a, b in
                                             zip(got, want)]),
                  "fraction of captions", None, sizes, **tags,
                  words=round(words_agreement(got, want), 4))
      bleu4, cider = scores(got)
      common.emit("lite_bleu4", bleu4, "BLEU-4", None, sizes, **tags)
      common.emit("lite_cider_d", cider, "CIDEr-D", None, sizes, **tags)
      pixels = [lite.load_image(data, captioner.image_size)[None]
                for data in timed]
      states = [captioner.encode(p)[0] for p in pixels]
      calls.update({
          f"{weights}": in_turns(lambda data, c=captioner: c.caption([data]),
                                 timed),
          f"{weights}_encoder": in_turns(captioner.encode, pixels),
          f"{weights}_search": in_turns(captioner.search, states)})
    seconds = common.time_calls(calls)
  common.emit("saved_model_latency_1_image", seconds["saved_model"] * 1e3,
              "ms", 1, sizes, includes="image bytes to the best caption")
  for weights in FLAGS.weights:
    common.emit("lite_latency_1_image", seconds[weights] * 1e3, "ms", 1,
                sizes, weights=weights,
                includes="image bytes to the best caption",
                encoder_ms=round(seconds[f"{weights}_encoder"] * 1e3, 2),
                search_ms=round(seconds[f"{weights}_search"] * 1e3, 2),
                over_saved_model=round(seconds[weights] /
                                       seconds["saved_model"], 3))


if __name__ == "__main__":
  app.run(main)
