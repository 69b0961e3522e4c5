"""Serving speed of an exported model, and the CNN's share of it.

  make bench-serve     (python -m benchmarks.bench_serve)
  python -m benchmarks.bench_serve --run_dir=RUN --images='DIR/*.jpg'
                       (a trained model on real photos; --run_dir=A,B,C:
                       the ensemble of those runs, exported as one)
  python -m benchmarks.bench_serve --decoder=transformer
                       (another decoder of the standard size)

Exports a realistic model (EfficientNet-Lite0 at 224 px, random weights, and
a Show and Tell decoder of the standard size, untrained: its captions run
all 20 words, the slowest case; ``--decoder`` another decoder, whose
untrained captions may end sooner), then times the SavedModel's
serving_default (beam 3, 20 words) on 640x480 JPEGs: one image's latency
and images/s for a batch, for the plain export and the one whose search is
XLA-compiled (``--xla``). The same images through decoding and the encoder
alone give the CNN's time; the target is that decoder and beam search add
at most a fifth of it for one image. The search alone (caption_features)
and the decoder's steps alone, without the search, show where that time
goes, and the decoder steps per image show what the search saves by
stopping once the captions it returns have ended (top 1 of 3 beams)
rather than all beams. With --run_dir, the same figures for that run's
best checkpoint (its captions end where the model ends them), or for the
ensemble of several runs, on the --images files where given (the first
16; one-image latency takes each in turn).
"""

import copy
import glob
import io
import itertools
import os
import tempfile

import numpy as np
from absl import app, flags
from PIL import Image
import tensorflow as tf

from benchmarks import common, standard_size as std
from im2txt_ext import export, runs, search
from im2txt_ext.config import ExperimentConfig, apply_overrides
from im2txt_ext.data.vocabulary import Vocabulary
from im2txt_ext.inference import Captioner

FLAGS = flags.FLAGS
flags.DEFINE_list("run_dir", [], "Trained run to export and time instead "
                  "of the untrained standard-size model; several: their "
                  "ensemble, exported as one.")
flags.DEFINE_string("images", "", "Glob of image files to caption instead "
                    "of random 640x480 JPEGs.")
flags.DEFINE_enum("decoder", "show_and_tell", ["show_and_tell",
                  "soft_attention", "transformer"], "The untrained model's "
                  "decoder (the attending ones read the 7x7 map).")

BATCH, BEAM, LENGTH, SIZE = 16, 3, 20, 224
SIZES = {"encoder": "efficientnet_lite0", "image_size": SIZE,
         "vocab": std.VOCAB, "hidden": std.HIDDEN, "beam": BEAM,
         "caption_length": LENGTH, "jpeg": "640x480"}


def untrained_run(run_dir):
  """A run directory (config, vocabulary, step-0 checkpoint) of the model."""
  config = apply_overrides(ExperimentConfig(), [
      "model.encoder=efficientnet_lite0", f"data.image_size={SIZE}",
      f"model.decoder={FLAGS.decoder}",
      f"model.embedding_size={std.EMBED}", f"model.hidden_size={std.HIDDEN}"])
  os.makedirs(run_dir)
  config.save(os.path.join(run_dir, runs.CONFIG_FILE))
  Vocabulary([f"word{i}" for i in range(std.VOCAB - 4)]).save(
      os.path.join(run_dir, runs.VOCAB_FILE))
  decoder = runs.build_decoder(config, std.VOCAB, with_encoder=True)
  runs.build_from_batch(decoder, {"image": tf.zeros([1, SIZE, SIZE, 3]),
                                  "input_ids": tf.zeros([1, 2], tf.int32)})
  checkpoint = tf.train.Checkpoint(model=decoder,
                                   step=tf.Variable(0, dtype=tf.int64))
  tf.train.CheckpointManager(checkpoint, os.path.join(
      run_dir, runs.CHECKPOINTS_DIR), 1).save()


def jpegs(count, seed=0):
  """Random 640x480 JPEGs (quality 90): string [count]."""
  rng = np.random.default_rng(seed)
  images = []
  for _ in range(count):
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (480, 640, 3), np.uint8)).save(
        buffer, "JPEG", quality=90)
    images.append(buffer.getvalue())
  return tf.constant(images)


def images_to_time(sizes):
  """The images timed: string [BATCH]; notes in ``sizes`` which they are."""
  if not FLAGS.images:
    return jpegs(BATCH)
  paths = sorted(glob.glob(FLAGS.images))[:BATCH]
  if len(paths) < BATCH:
    raise SystemExit(f"error: {FLAGS.images}: {len(paths)} images, need "
                     f"{BATCH}")
  files = []
  for path in paths:
    with open(path, "rb") as f:
      files.append(f.read())
  sizes["jpeg"] = f"{BATCH} files of {FLAGS.images}"
  return tf.constant(files)


def trained_sizes(captioner, run_dirs):
  """The sizes of the trained run(s) a Captioner holds."""
  config = captioner.model.config
  return {"run_dir": ",".join(run_dirs), "encoder": config.model.encoder,
          "decoder": config.model.decoder,
          "image_size": runs.image_size(config),
          "vocab": len(captioner.vocab.words),
          "hidden": config.model.hidden_size, "beam": BEAM,
          "max_length": LENGTH, "jpeg": "640x480"}


def decoder_steps(decoder, steps):
  """The decoder's own share of the search: ``steps`` decoder steps on BEAM
  copies of an image's features, each feeding back its argmax word, with
  none of the search's bookkeeping; XLA-compiled."""
  @tf.function(jit_compile=True)
  def run(features):
    state = decoder.initial_state(tf.repeat(features, BEAM, axis=0))
    words = tf.ones([BEAM], tf.int32)
    for _ in range(steps):
      out = decoder.step(words, state)
      words, state = tf.argmax(out.logits, -1, output_type=tf.int32), \
          out.state
    return words
  return run


def search_steps(captioner, features, top_k):
  """Mean decoder steps of the export's beam search (BEAM, LENGTH and its
  decoding defaults) per image, each image searched alone, returning
  ``top_k`` captions: deterministic, so it shows what stopping early saves
  whatever the machine's noise."""
  counted = copy.copy(captioner)
  counted.searched = search.StepCounter(captioner.searched)
  module = export.CaptionModule(counted, BEAM, LENGTH, top_k)
  run = tf.function(lambda x: module.caption(x, **module.defaults))
  for one in features:
    run(one)
  return int(counted.searched.steps.numpy()) / len(features)


def main(argv):
  del argv
  tf.keras.utils.set_random_seed(0)
  with tempfile.TemporaryDirectory() as folder:
    run_dirs = FLAGS.run_dir or [os.path.join(folder, "run")]
    if not FLAGS.run_dir:
      untrained_run(run_dirs[0])
    captioner = Captioner(run_dirs)  # What the export holds.
    sizes = trained_sizes(captioner, run_dirs) if FLAGS.run_dir else \
        {**SIZES, "decoder": FLAGS.decoder}
    decoder, searched = captioner.decoder, captioner.searched
    size = sizes["image_size"]
    serving = {}
    for xla in (False, True):
      model_dir = os.path.join(folder, f"model_xla{xla}")
      export.export(run_dirs, model_dir, beam_size=BEAM, max_length=LENGTH,
                    top_k=1, xla=xla)
      serving["_xla" if xla else ""] = tf.saved_model.load(
          model_dir).signatures
    encoder = tf.function(lambda images: decoder.encode(
        {"image": export.decode_images(images, size)}))
    batch = images_to_time(sizes)
    ones = [batch[i:i + 1] for i in range(BATCH)]  # Timed in turn.
    features = [encoder(images) for images in ones]
    captions = serving[""]["serving_default"](images=batch)["captions"]
    steps = round(float(np.mean([min(len(c.split()) + 1, LENGTH) for c in
                                 captions.numpy()[:, 0]])))
    calls = [("cnn", encoder, ones), ("cnn_batch", encoder, [batch]),
             ("steps", decoder_steps(searched, steps), features)]
    for suffix, signatures in serving.items():
      calls += [
          ("export" + suffix, signatures["serving_default"], ones),
          ("export_batch" + suffix, signatures["serving_default"], [batch]),
          ("search" + suffix, lambda x, fn=signatures["caption_features"]:
           fn(features=x), features)]
    def in_turns(fn, inputs):
      turns = itertools.cycle(inputs)
      return lambda: tf.nest.map_structure(np.asarray, fn(next(turns)))
    # Interleaved: the CNN and the export see the same load, so the
    # decoder's share of the time is fair on a busy machine too.
    seconds = common.time_calls({name: in_turns(fn, inputs)
                                 for name, fn, inputs in calls})
  common.emit("cnn_latency_1_image", seconds["cnn"] * 1e3, "ms", 1, sizes,
              includes="JPEG decode, resize, preprocessing, CNN")
  for top_k in (1, BEAM):
    common.emit(f"search_steps_top{top_k}", search_steps(captioner, features,
                                                          top_k),
                "steps/image", 1, sizes, includes=f"beam {BEAM}, the best "
                f"{top_k} caption(s) returned; it stops once they ended")
  common.emit("decoder_steps_alone_1_image_xla", seconds["steps"] * 1e3,
              "ms", 1, sizes, steps=steps, includes=f"{steps} decoder steps "
              f"on {BEAM} beams, no search; XLA")
  for suffix in serving:
    one, batch = seconds["export" + suffix], seconds["export_batch" + suffix]
    common.emit("serve_latency_1_image" + suffix, one * 1e3, "ms", 1, sizes)
    common.emit("search_latency_1_image" + suffix,
                seconds["search" + suffix] * 1e3, "ms", 1, sizes,
                includes="caption_features: decoder and beam search alone")
    common.emit("serve_throughput" + suffix, BATCH / batch, "images/s",
                BATCH, sizes)
    common.emit("cnn_fraction_1_image" + suffix, seconds["cnn"] / one,
                "fraction", 1, sizes)
    overhead = one / seconds["cnn"] - 1
    common.emit("decoder_search_over_cnn_1_image" + suffix, overhead,
                "ratio", 1, sizes, target="<= 0.2", met=bool(overhead <= 0.2))
    common.emit("cnn_fraction_batch" + suffix, seconds["cnn_batch"] / batch,
                "fraction", BATCH, sizes)


if __name__ == "__main__":
  app.run(main)
