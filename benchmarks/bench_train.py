"""Training throughput at the standard size: Show and Tell, and soft and
hard attention over 196x512 (VGG) and 64x2048 (InceptionV3) feature maps.

  make bench-train      (python -m benchmarks.bench_train)

Prints captions/s of one full training step (forward, backward with the
variant's auxiliary losses, Adam) and the achieved GFLOP/s (formulas in
benchmarks/standard_size.py) against a float32 matmul peak measured in the
same run.
"""

import tensorflow as tf

from benchmarks import common, standard_size as std
from im2txt_ext.training.losses import masked_cross_entropy


def time_training(decoder, features, ids):
  """Median seconds of one training step on a fixed batch."""
  batch = {"input_ids": ids, "target_ids": tf.roll(ids, -1, axis=1),
           "mask": tf.ones_like(ids, tf.float32)}
  optimizer = tf.keras.optimizers.Adam(1e-3)

  @tf.function
  def train_step():
    with tf.GradientTape() as tape:
      logits, aux = decoder.teacher_forced(features, ids, training=True)
      loss, token_nll = masked_cross_entropy(logits, batch["target_ids"],
                                             batch["mask"])
      loss += sum(decoder.auxiliary_losses(aux, batch, token_nll).values())
    grads = tape.gradient(loss, decoder.trainable_variables)
    optimizer.apply(grads, decoder.trainable_variables)
    return loss

  return common.time_call(lambda: train_step().numpy())


def main():
  peak = common.matmul_peak_gflops()
  common.emit("matmul_peak", peak, "GFLOP/s",
              sizes={"n": [1024, 2048, 4096]})
  runs = [("show_and_tell", (std.FEATURES,), "2048",
           std.forward_flops_per_caption())]
  for name in ("soft_attention", "hard_attention"):
    for label, shape in std.FEATURE_MAPS.items():
      runs.append((name, shape, label,
                   std.attention_forward_flops_per_caption(*shape)))
  for name, shape, label, forward in runs:
    seconds = time_training(*std.decoder(name, shape))
    gflops = 3 * forward * std.BATCH / seconds / 1e9
    common.emit(f"train_{name}_{label}", std.BATCH / seconds, "captions/s",
                std.BATCH, {**std.SIZES, "features": list(shape)},
                gflops=round(gflops, 1),
                fraction_of_matmul_peak=round(gflops / peak, 3))

if __name__ == "__main__":
  main()
