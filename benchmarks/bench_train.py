"""Training throughput of Show and Tell at the standard size.

  make bench-train      (python -m benchmarks.bench_train)

Prints captions/s of one full training step (forward, backward, Adam) and
the achieved GFLOP/s (formula in benchmarks/standard_size.py) against a
float32 matmul peak measured in the same run.
"""

import tensorflow as tf

from benchmarks import common, standard_size as std
from im2txt_ext.training.losses import masked_cross_entropy


def main():
  peak = common.matmul_peak_gflops()
  common.emit("matmul_peak", peak, "GFLOP/s", sizes={"n": 2048})
  decoder, features, ids = std.show_and_tell()
  targets = tf.roll(ids, -1, axis=1)
  mask = tf.ones_like(ids, tf.float32)
  optimizer = tf.keras.optimizers.Adam(1e-3)

  @tf.function
  def train_step():
    with tf.GradientTape() as tape:
      logits, _ = decoder.teacher_forced(features, ids, training=True)
      loss, _ = masked_cross_entropy(logits, targets, mask)
    grads = tape.gradient(loss, decoder.trainable_variables)
    optimizer.apply(grads, decoder.trainable_variables)
    return loss

  seconds = common.time_call(lambda: train_step().numpy())
  gflops = 3 * std.forward_flops_per_caption() * std.BATCH / seconds / 1e9
  common.emit("train_show_and_tell", std.BATCH / seconds, "captions/s",
              std.BATCH, std.SIZES, gflops=round(gflops, 1),
              fraction_of_matmul_peak=round(gflops / peak, 3))


if __name__ == "__main__":
  main()
