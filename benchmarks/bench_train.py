"""Training throughput at the standard size: Show and Tell, soft and hard
attention and the Transformer over 196x512 (VGG) and 64x2048 (InceptionV3)
feature maps.

  make bench-train      (python -m benchmarks.bench_train)

Prints captions/s of one full training step (forward, backward with the
variant's auxiliary losses, Adam) and the achieved GFLOP/s (formulas in
benchmarks/standard_size.py) against a float32 matmul peak measured in the
same run. Show and Tell, soft attention 196x512 and the Transformer
196x512 are also timed with XLA
(``_xla``), with mixed precision (``_mixed_bfloat16`` on a CPU,
``_mixed_float16`` with loss scaling on a GPU) and with both: the trainer's
``train.jit_compile`` and ``train.precision``. ``--batch=256`` times
another batch size; ``--models=soft_attention,transformer`` only those.
"""

import keras
import tensorflow as tf
from absl import app, flags

from benchmarks import common, standard_size as std
from im2txt_ext.training import distribute, objectives

FLAGS = flags.FLAGS
flags.DEFINE_integer("batch", std.BATCH, "Captions per training step (the "
                     "standard size is 64).")
flags.DEFINE_list("models", None, "Time only these decoders (default: all), "
                  "e.g. soft_attention,transformer.")


def time_training(decoder, features, ids, jit_compile=False):
  """Median seconds of one training step on a fixed batch."""
  batch = {"input_ids": ids, "target_ids": tf.roll(ids, -1, axis=1),
           "mask": tf.ones_like(ids, tf.float32)}
  objective = objectives.Objective(
      (1.0, term) for term in [objectives.CrossEntropy()] +
      decoder.loss_terms())
  optimizer = tf.keras.optimizers.Adam(1e-3)
  if decoder.compute_dtype == "float16":
    optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
  scale = getattr(optimizer, "scale_loss", lambda loss: loss)

  @tf.function(jit_compile=jit_compile)
  def train_step():
    with tf.GradientTape() as tape:
      loss, _ = objective(objectives.LossInputs(
          decoder, features, batch, None, tf.reduce_sum(batch["mask"])))
    grads = tape.gradient(scale(loss), decoder.trainable_variables)
    optimizer.apply(grads, decoder.trainable_variables)
    return loss

  return common.time_call(lambda: train_step().numpy())


def main(argv):
  del argv
  batch = FLAGS.batch
  peak = common.matmul_peak_gflops()
  common.emit("matmul_peak", peak, "GFLOP/s",
              sizes={"n": [1024, 2048, 4096]})
  runs = [("show_and_tell", (std.FEATURES,), "2048")] + [
      (name, shape, label)
      for name in ("soft_attention", "hard_attention", "transformer")
      for label, shape in std.FEATURE_MAPS.items()]
  mixed = "mixed_float16" if tf.config.list_physical_devices("GPU") else \
      "mixed_bfloat16"
  # (name suffix, precision, XLA): every model in float32, and Show and
  # Tell, soft attention 196x512 and the Transformer 196x512 also with XLA
  # and mixed precision.
  variants = [("", "float32", False), ("_xla", "float32", True),
              (f"_{mixed}", mixed, False), (f"_{mixed}_xla", mixed, True)]
  every_variant = {("show_and_tell", "2048"), ("soft_attention", "196x512"),
                   ("transformer", "196x512")}
  for name, shape, label in runs:
    if FLAGS.models and name not in FLAGS.models:
      continue
    forward = std.forward_flops(name, shape)
    for suffix, precision, jit in variants if (name, label) in \
        every_variant else variants[:1]:
      with distribute.precision_scope(precision):
        model = std.decoder(name, shape, batch)
      seconds = time_training(*model, jit_compile=jit)
      gflops = 3 * forward * batch / seconds / 1e9
      extra = {"precision": precision, "jit_compile": jit} if suffix else {}
      common.emit(f"train_{name}_{label}{suffix}", batch / seconds,
                  "captions/s", batch, {**std.SIZES, "features": list(shape)},
                  gflops=round(gflops, 1),
                  fraction_of_matmul_peak=round(gflops / peak, 3), **extra)


if __name__ == "__main__":
  app.run(main)
