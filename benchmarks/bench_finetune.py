"""The cost of fine-tuning the CNN: one training step of the Flickr8k soft
attention model on 224-px images (``--image_size=448``: the 14x14 grid's),
with EfficientNet-Lite0 frozen (its forward pass only) and fine-tuned
(``train.train_encoder_after``) with its BatchNorm frozen or on batch
statistics (``train.encoder_batch_norm``).

  make bench-finetune      (python -m benchmarks.bench_finetune)

Prints images/s of each (timed in turns) and the hours that ``--steps``
steps of 64 would take at that rate (6000: the Flickr8k schedule; 2000:
the soft-attention fine-tuning of experiments/suites/flickr8k_finetune.json);
the weights are random (the arithmetic is that of the ImageNet ones), so it
needs no asset.
"""

import tensorflow as tf
from absl import app, flags

from benchmarks import common
from im2txt_ext import runs
from im2txt_ext.config import ExperimentConfig
from im2txt_ext.training import objectives, optimizers

FLAGS = flags.FLAGS
flags.DEFINE_integer("batch", 64, "Images (one caption each) per step.")
flags.DEFINE_string("config", "experiments/configs/flickr8k/soft_attention"
                    ".json", "The experiment whose model is timed.")
flags.DEFINE_integer("image_size", 224, "Side of the timed photos, px.")
flags.DEFINE_integer("steps", 6000, "Steps of 64 whose hours are printed.")
flags.DEFINE_integer("vocab_size", 2600, "Words (Flickr8k's with min_word_"
                     "count 5: about 2,600).")

_WORDS = 16  # Caption length of the timed batch.


def step_fn(config, decoder, batch, train_encoder, batch_statistics):
  """One compiled training step: forward, backward, the update."""
  encoder = decoder.encoder
  encoder.trainable = train_encoder
  variables = list(decoder.trainable_variables)
  optimizer = optimizers.make_optimizer(
      config, variables, encoder.trainable_variables if train_encoder else ())
  objective = objectives.Objective(
      (1.0, term) for term in [objectives.CrossEntropy()] +
      decoder.loss_terms())
  words = tf.reduce_sum(batch["mask"])

  @tf.function
  def step():
    with tf.GradientTape() as tape:
      features = decoder.encode(batch, training=batch_statistics)
      loss, _ = objective(objectives.LossInputs(
          decoder, features, batch, tf.constant([0, 0]), words))
    optimizer.apply(tape.gradient(loss, variables), variables)
    return loss
  step()  # Traced now, while encoder.trainable is this mode's.
  return lambda: step().numpy()


def main(argv):
  del argv
  config = ExperimentConfig.load(FLAGS.config)
  config.model.encoder_weights = ""  # Random: the same arithmetic.
  config.train.encoder_learning_rate_scale = 0.1
  config.data.image_size = FLAGS.image_size
  n = FLAGS.batch
  side = config.data.image_size
  images = tf.random.uniform([n, side, side, 3], 0, 255)
  ids = tf.random.uniform([n, _WORDS], 3, FLAGS.vocab_size, tf.int32)
  batch = {"image": images, "input_ids": ids,
           "target_ids": tf.roll(ids, -1, axis=1),
           "mask": tf.ones_like(ids, tf.float32)}
  decoder = runs.build_decoder(config, FLAGS.vocab_size, with_encoder=True)
  runs.build_from_batch(decoder, batch)
  modes = {"frozen_cnn": (False, False),
           "finetuned_cnn_frozen_batch_norm": (True, False),
           "finetuned_cnn_batch_statistics": (True, True)}
  fns = {name: step_fn(config, decoder, batch, *mode)
         for name, mode in modes.items()}
  seconds = common.time_calls(fns, warmup=1, min_seconds=10.0, min_runs=3)
  for name, s in seconds.items():
    common.emit(f"train_step_{config.model.decoder}_{name}", n / s,
                "images/s", n, {"image_side": side, "words": _WORDS,
                                "encoder": config.model.encoder},
                steps_of_64=FLAGS.steps,
                hours=round(FLAGS.steps * 64 / (n / s) / 3600, 2))


if __name__ == "__main__":
  app.run(main)
