"""Caption-search throughput of a decoder at the standard size.

  make bench-search     (python -m benchmarks.bench_search)
  make bench-search SEARCH_BASELINE=REV   (also the search of git revision
                                           REV, timed in turns with today's)
  python -m benchmarks.bench_search --decoder=transformer
                        (soft_attention or transformer over 196x512 maps)

Prints captions/s of batched greedy decoding and batched beam search (beam
3) for a batch of 64 images and 20 words (every caption runs its full length:
the untrained model rarely emits <end>), with GFLOP/s against a measured
matmul peak. Beam search does ``beam`` times the arithmetic per image.
With a baseline revision it also prints both beam searches' captions/s,
measured in turns (``common.time_calls``), and their ratio.
"""

import importlib.util
import subprocess
import sys
import tempfile

import tensorflow as tf
from absl import app, flags

from benchmarks import common, standard_size as std
from im2txt_ext import search

flags.DEFINE_string("baseline", None, "A git revision whose search "
                    "(im2txt_ext/search.py) to compare beam search with.")
flags.DEFINE_enum("decoder", "show_and_tell", ["show_and_tell",
                  "soft_attention", "transformer"], "The decoder searched: "
                  "Show and Tell on 2048-d vectors, the others on 196x512 "
                  "maps.")
FLAGS = flags.FLAGS


def search_at(revision):
  """The module im2txt_ext/search.py as it was at a git revision."""
  source = subprocess.run(["git", "show", f"{revision}:im2txt_ext/search.py"],
                          capture_output=True, text=True, check=True).stdout
  with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
    f.write(source)  # AutoGraph reads the source of what it converts.
  spec = importlib.util.spec_from_file_location("search_baseline", f.name)
  module = importlib.util.module_from_spec(spec)
  sys.modules["search_baseline"] = module
  spec.loader.exec_module(module)
  return module


def compare_beams(decoder, features, revision, sizes):
  """Beam 3 of today's search and of ``revision``'s, timed in turns."""
  old = search_at(revision)
  fns = {name: tf.function(lambda m=module: m.beam_search(
      decoder, features, 3, std.LENGTH).ids)
         for name, module in (("new", search), ("old", old))}
  seconds = common.time_calls({name: lambda fn=fn: fn().numpy()
                               for name, fn in fns.items()}, min_seconds=10)
  for name in fns:
    common.emit(f"search_beam3_{name}", std.BATCH / seconds[name],
                "captions/s", std.BATCH, sizes, revision=(
                    revision if name == "old" else "working tree"))
  common.emit("beam3_new_over_old_throughput", seconds["old"] / seconds["new"],
              "ratio", std.BATCH, sizes, baseline=revision)


def main(argv):
  del argv
  peak = common.matmul_peak_gflops()
  common.emit("matmul_peak", peak, "GFLOP/s",
              sizes={"n": [1024, 2048, 4096]})
  name = FLAGS.decoder
  shape = std.SEARCH_FEATURES[name]
  decoder, features, _ = std.decoder(name, shape)
  # Never emitting <end> keeps every caption at full length, so all methods
  # do the same number of steps.
  decoder.logits_layer.bias.assign(
      tf.tensor_scatter_nd_update(decoder.logits_layer.bias, [[2]], [-1e4]))
  forward = std.forward_flops(name, shape)
  sizes = {**std.SIZES, "decoder": name, "features": list(shape)}
  runs = {
      "greedy": (1, tf.function(
          lambda: search.greedy(decoder, features, std.LENGTH).ids)),
      "beam3": (3, tf.function(
          lambda: search.beam_search(decoder, features, 3, std.LENGTH).ids)),
  }
  rates = {}
  for method, (beams, fn) in runs.items():
    seconds = common.time_call(lambda: fn().numpy())
    rates[method] = std.BATCH / seconds
    gflops = beams * forward * std.BATCH / seconds / 1e9
    common.emit(f"search_{method}", rates[method], "captions/s", std.BATCH,
                sizes, gflops=round(gflops, 1),
                fraction_of_matmul_peak=round(gflops / peak, 3))
  common.emit("beam3_over_greedy_throughput", rates["beam3"] / rates["greedy"],
              "ratio", std.BATCH, sizes)
  if FLAGS.baseline:
    compare_beams(decoder, features, FLAGS.baseline, sizes)


if __name__ == "__main__":
  app.run(main)
