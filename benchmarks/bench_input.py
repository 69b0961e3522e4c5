"""Does the input keep up? The tf.data pipeline alone against the rate at
which the training step consumes captions.

  make bench-input      (python -m benchmarks.bench_input)

Prints captions/s (one caption is one training example) of:
  input_features: the cached-feature pipeline (shuffle, caption split,
    padding, length bucketing, batches of 64, prefetch; the feature rows
    are gathered inside the step);
  input_images_files / input_images_tfrecords: the image pipeline from JPEG
    files, and from 8 TFRecord shards read by parallel interleave (read,
    decode, resize to 224, the same caption work);
  train_*: one training step at the standard size (benchmarks/
    standard_size.py): Show and Tell and soft attention (196x512) on cached
    features, and Show and Tell with a frozen EfficientNet-Lite0 on 224 px
    images (im2txt's first phase);
and headroom_* = pipeline / training (x): above 1 the step never waits for
input. Data: 256 synthetic 224 px scene JPEGs with 5 captions each.
"""

import os
import tempfile

import numpy as np
import tensorflow as tf
from absl import app, flags

from benchmarks import common, standard_size as std
from benchmarks.bench_train import time_training
from im2txt_ext.data import pipeline, scenes, tfrecords
from im2txt_ext.data.records import CaptionRecord
from im2txt_ext.data.tokenizer import tokenize
from im2txt_ext.data.vocabulary import Vocabulary
from im2txt_ext.encoders import backbones
from im2txt_ext.models import decoder_class
from im2txt_ext.training.losses import masked_cross_entropy

FLAGS = flags.FLAGS
flags.DEFINE_integer("count", 256, "Synthetic images (5 captions each).")
flags.DEFINE_integer("batches", 20, "Batches drawn per timed pipeline run.")

SIZE = 224


def _records(folder, count):
  """Synthetic scenes saved as 224 px JPEGs, with their 5 captions each."""
  rng = np.random.default_rng(0)
  records = []
  for i in range(count):
    image, captions = scenes.render_scene(rng, SIZE)
    path = os.path.join(folder, f"scene_{i:04d}.jpg")
    image.save(path, quality=90)
    records.append(CaptionRecord(os.path.basename(path), path, captions))
  return records


def pipeline_rate(examples, config, features=None, batches=20):
  """Captions/s drawn from a training pipeline (after a warm-up)."""
  iterator = iter(pipeline.batched(examples, config, training=True,
                                   features=features))

  def draw():
    return sum(int(next(iterator)["input_ids"].shape[0])
               for _ in range(batches))
  seconds = common.time_call(draw, warmup=1, min_seconds=2.0)
  return config.batch_size * batches / seconds


def image_training_rate():
  """Captions/s of Show and Tell training on 224 px images through a frozen
  EfficientNet-Lite0 (random weights: speed does not depend on them)."""
  tf.keras.utils.set_random_seed(0)
  encoder = backbones.build_encoder("efficientnet_lite0", None, SIZE)
  decoder = decoder_class("show_and_tell")(
      std.VOCAB, embedding_size=std.EMBED, hidden_size=std.HIDDEN,
      dropout=0.0, encoder=encoder)
  images = tf.random.uniform([std.BATCH, SIZE, SIZE, 3], 0, 255)
  ids = tf.random.uniform([std.BATCH, std.LENGTH], 3, std.VOCAB, tf.int32)
  decoder({"image": images, "input_ids": ids})
  variables = decoder.trainable_variables
  optimizer = tf.keras.optimizers.Adam(1e-3)
  mask = tf.ones_like(ids, tf.float32)

  @tf.function
  def train_step():
    with tf.GradientTape() as tape:
      features = decoder.encode({"image": images}, training=True)
      logits, _ = decoder.teacher_forced(features, ids, training=True)
      loss, _ = masked_cross_entropy(logits, tf.roll(ids, -1, 1), mask)
    optimizer.apply(tape.gradient(loss, variables), variables)
    return loss

  return std.BATCH / common.time_call(lambda: train_step().numpy(),
                                      min_seconds=3.0)


def main(argv):
  del argv
  config = pipeline.PipelineConfig(batch_size=std.BATCH, image_size=SIZE,
                                   shuffle_buffer=1024)
  with tempfile.TemporaryDirectory() as tmp:
    records = _records(tmp, FLAGS.count)
    vocab = Vocabulary.build(tokenize(c) for r in records for c in r.captions)
    sizes = {"images": len(records), "captions": 5 * len(records),
             "image_size": SIZE}
    lookup = pipeline.FeatureLookup(
        [r.image_id for r in records],
        np.zeros([len(records), std.FEATURES], np.float16))
    rates = {"features": pipeline_rate(
        pipeline.from_records(records, vocab, read_images=False), config,
        lookup, FLAGS.batches)}
    common.emit("input_features", rates["features"], "captions/s",
                std.BATCH, sizes)
    rates["files"] = pipeline_rate(pipeline.from_records(records, vocab),
                                   config, batches=FLAGS.batches)
    common.emit("input_images_files", rates["files"], "captions/s",
                std.BATCH, sizes)
    prefix = os.path.join(tmp, "records", "train")
    tfrecords.write_tfrecords(records, vocab, prefix, num_shards=8)
    rates["tfrecords"] = pipeline_rate(
        pipeline.from_tfrecords(prefix + "-*"), config,
        batches=FLAGS.batches)
    common.emit("input_images_tfrecords", rates["tfrecords"], "captions/s",
                std.BATCH, {**sizes, "shards": 8})

  trained = {}
  for name, shape, label in [("show_and_tell", (std.FEATURES,), "2048"),
                             ("soft_attention", (196, 512), "196x512")]:
    seconds = time_training(*std.decoder(name, shape))
    trained[name] = std.BATCH / seconds
    common.emit(f"train_{name}_{label}", trained[name], "captions/s",
                std.BATCH, {**std.SIZES, "features": list(shape)})
    common.emit(f"headroom_features_{name}", rates["features"] / trained[name],
                "x", std.BATCH, {"input": "input_features",
                                 "train": f"train_{name}_{label}"})
  images = image_training_rate()
  common.emit("train_show_and_tell_lite0_224", images, "captions/s",
              std.BATCH, {**std.SIZES, "image_size": SIZE,
                          "encoder": "efficientnet_lite0 (frozen)"})
  slowest = min(rates["files"], rates["tfrecords"])
  common.emit("headroom_images_show_and_tell_lite0", slowest / images, "x",
              std.BATCH, {"input": "slower of input_images_*",
                          "train": "train_show_and_tell_lite0_224"})


if __name__ == "__main__":
  app.run(main)
