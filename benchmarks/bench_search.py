"""Caption-search throughput of decoders at the standard size.

  make bench-search     (python -m benchmarks.bench_search)
  make bench-search SEARCH_BASELINE=REV   (also the search of git revision
                                           REV, timed in turns with today's)
  python -m benchmarks.bench_search --decoders=show_and_tell
                        (some of the decoders only)

Prints captions/s of batched greedy decoding and batched beam search (beam
3) for a batch of 64 images and 20 words (every caption runs its full length:
<end> is never emitted), with GFLOP/s against a measured matmul peak; all
decoders and methods are timed in turns (``common.time_calls``). Beam search
does ``beam`` times the arithmetic of the caption's steps per image, and the
image's part once (the Transformer's memory keys and values, half its
forward pass at this size, so its beam's throughput can pass 1/3 of
greedy's). Figures are named
``search_{method}`` for Show and Tell, ``search_{decoder}_{method}`` for
the others. With a baseline revision it also prints both beam searches'
captions/s for the first decoder, measured in turns, and their ratio.
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
flags.DEFINE_list("decoders", ["show_and_tell", "soft_attention",
                                "transformer"], "The decoders searched: "
                  "show_and_tell (on 2048-d vectors), soft_attention and "
                  "transformer (on 196x512 maps).")
FLAGS = flags.FLAGS


def search_at(revision):
  """The module im2txt_ext/search.py as it was at a git revision."""
  source = subprocess.run(["git", "show", f"{revision}:im2txt_ext/search.py"],
                          capture_output=True, text=True, check=True).stdout
  with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
    f.write(source)
  spec = importlib.util.spec_from_file_location("search_baseline", f.name)
  module = importlib.util.module_from_spec(spec)
  sys.modules["search_baseline"] = module
  spec.loader.exec_module(module)
  return module


def compare_beams(decoder, features, revision, sizes):
  """Beam 3 of today's search and of ``revision``'s, timed in turns."""
  old = search_at(revision)
  def beam3(module):
    return tf.function(lambda: module.beam_search(
        decoder, features, 3, std.LENGTH).ids, autograph=False)
  fns = {"new": beam3(search), "old": beam3(old)}
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
  unknown = set(FLAGS.decoders) - set(std.SEARCH_FEATURES)
  if unknown:
    raise app.UsageError(f"unknown decoders {sorted(unknown)}; choose from "
                         f"{sorted(std.SEARCH_FEATURES)}")
  runs, models = {}, {}
  for name in FLAGS.decoders:
    shape = std.SEARCH_FEATURES[name]
    decoder, features, _ = std.decoder(name, shape)
    # Never emitting <end> keeps every caption at full length, so all
    # methods do the same number of steps.
    decoder.logits_layer.bias.assign(tf.tensor_scatter_nd_update(
        decoder.logits_layer.bias, [[2]], [-1e4]))
    models[name] = (decoder, features,
                    {**std.SIZES, "decoder": name, "features": list(shape)})
    prefix = "search" if name == "show_and_tell" else f"search_{name}"
    # Traced as the Captioner traces them: without AutoGraph (the searches
    # are written with tf.while_loop).
    greedy = tf.function(lambda d=decoder, f=features: search.greedy(
        d, f, std.LENGTH).ids, autograph=False)
    beam3 = tf.function(lambda d=decoder, f=features: search.beam_search(
        d, f, 3, std.LENGTH).ids, autograph=False)
    runs[f"{prefix}_greedy"] = (name, std.forward_flops(name, shape), greedy)
    runs[f"{prefix}_beam3"] = (name, std.forward_flops(name, shape, beams=3),
                               beam3)
  seconds = common.time_calls({label: lambda fn=fn: fn().numpy()
                               for label, (_, _, fn) in runs.items()})
  for label, (name, flops, _) in runs.items():
    gflops = flops * std.BATCH / seconds[label] / 1e9
    common.emit(label, std.BATCH / seconds[label], "captions/s", std.BATCH,
                models[name][2], gflops=round(gflops, 1),
                fraction_of_matmul_peak=round(gflops / peak, 3))
  for name in FLAGS.decoders:
    prefix = "search" if name == "show_and_tell" else f"search_{name}"
    ratio = "beam3_over_greedy_throughput"
    common.emit(ratio if name == "show_and_tell" else f"{name}_{ratio}",
                seconds[f"{prefix}_greedy"] / seconds[f"{prefix}_beam3"],
                "ratio", std.BATCH, models[name][2])
  if FLAGS.baseline:
    decoder, features, sizes = models[FLAGS.decoders[0]]
    compare_beams(decoder, features, FLAGS.baseline, sizes)


if __name__ == "__main__":
  app.run(main)
