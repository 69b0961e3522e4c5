"""Caption-search throughput of Show and Tell at the standard size.

  make bench-search     (python -m benchmarks.bench_search)

Prints captions/s of batched greedy decoding and batched beam search (beam
3) for a batch of 64 images and 20 words (every caption runs its full length:
the untrained model rarely emits <end>), with GFLOP/s against a measured
matmul peak. Beam search does ``beam`` times the arithmetic per image.
"""

import tensorflow as tf

from benchmarks import common, standard_size as std
from im2txt_ext import search


def main():
  peak = common.matmul_peak_gflops()
  common.emit("matmul_peak", peak, "GFLOP/s",
              sizes={"n": [1024, 2048, 4096]})
  decoder, features, _ = std.show_and_tell()
  # Never emitting <end> keeps every caption at full length, so all methods
  # do the same number of steps.
  decoder.logits_layer.bias.assign(
      tf.tensor_scatter_nd_update(decoder.logits_layer.bias, [[2]], [-1e4]))
  forward = std.forward_flops_per_caption()
  runs = {
      "greedy": (1, tf.function(
          lambda: search.greedy(decoder, features, std.LENGTH).ids)),
      "beam3": (3, tf.function(
          lambda: search.beam_search(decoder, features, 3, std.LENGTH).ids)),
  }
  rates = {}
  for name, (beams, fn) in runs.items():
    seconds = common.time_call(lambda: fn().numpy())
    rates[name] = std.BATCH / seconds
    gflops = beams * forward * std.BATCH / seconds / 1e9
    common.emit(f"search_{name}", rates[name], "captions/s", std.BATCH,
                {**std.SIZES, "features": std.FEATURES},
                gflops=round(gflops, 1),
                fraction_of_matmul_peak=round(gflops / peak, 3))
  common.emit("beam3_over_greedy_throughput", rates["beam3"] / rates["greedy"],
              "ratio", std.BATCH, {**std.SIZES, "features": std.FEATURES})


if __name__ == "__main__":
  main()
