"""Exports a trained model as a self-contained SavedModel (image bytes in,
captions out; see im2txt_ext/export.py for the signatures), or with
--format=keras as one .keras file of the decoder and its encoder for
``keras.saving.load_model`` (see im2txt_ext/keras_format.py): its captions'
ids are words of the run's vocab.txt; the search flags do not apply to it.
With --format=tflite it writes a folder of TFLite models for mobile
runtimes: the encoder, one decoder step, the vocabulary and the search
defaults (see im2txt_ext/lite.py, whose LiteCaptioner runs them).

  im2txt-export --run_dir=runs/demo --output=exports/demo
  im2txt-export --run_dir=runs/seed0,runs/seed1 --output=exports/ensemble
  im2txt-export --run_dir=runs/demo --output=demo.keras --format=keras
  im2txt-export --run_dir=runs/demo --output=exports/demo_lite \
      --format=tflite --tflite_weights=int8
"""

import os

from absl import flags

from im2txt_ext.cli import run
from im2txt_ext.errors import InputError

FLAGS = flags.FLAGS


def define_flags():
  """This command's flags (see im2txt_ext.cli)."""
  flags.DEFINE_list("run_dir", None, "Training run directory (holds "
                    "config.json, vocab.txt and checkpoints); several, "
                    "comma-separated, export their ensemble (SavedModel "
                    "only).")
  flags.DEFINE_string("output", None, "SavedModel folder (or, with "
                      "--format=keras, .keras file) to write; an existing "
                      "export there is replaced atomically.")
  flags.DEFINE_enum("format", "saved_model", ["saved_model", "keras",
                                               "tflite"],
                    "saved_model: the serving SavedModel; keras: the decoder "
                    "with its encoder as a .keras file (keras.saving); "
                    "tflite: a folder of TFLite models (encoder, one decoder "
                    "step) for mobile runtimes.")
  flags.DEFINE_enum("tflite_weights", "float32",
                    ["float32", "float16", "int8"], "With --format=tflite: "
                    "the weights' precision (int8: dynamic-range "
                    "quantisation).")
  flags.DEFINE_enum("checkpoint", "best", ["best", "latest"], "Which "
                    "checkpoint: best validation BLEU-4 (CIDEr-D for SCST "
                    "runs) or the latest.")
  flags.DEFINE_integer("beam_size", 3, "Default beams per image "
                       "(serving_default, caption_features).")
  flags.DEFINE_integer("max_length", 20, "Default most words per caption, "
                       "<end> included.")
  flags.DEFINE_integer("top_k", 3, "Default captions returned per image (at "
                       "most beam_size).")
  flags.DEFINE_integer("max_pixels", 40_000_000, "Largest accepted image, "
                       "width x height; larger ones are refused undecoded.")
  flags.DEFINE_boolean("allow_unk", False, "Let captions contain <unk> "
                       "(by default the search never emits it).")
  flags.DEFINE_enum("length_normalization", "plain", ["plain", "gnmt"],
                    "Length normalisation of the search's scores: n^alpha or "
                    "((5 + n) / 6)^alpha (alpha: caption_with_options' "
                    "length_penalty).")
  flags.DEFINE_boolean("xla", False, "Compile the search of "
                       "serving_default and caption_features with XLA (faster "
                       "on CPU; compiled again for each new batch size).")
  flags.register_validator(
      "run_dir", lambda dirs: dirs is None or bool(dirs) and all(dirs),
      "--run_dir: give one or more run directories")
  flags.mark_flags_as_required(["run_dir", "output"])


def main(argv):
  del argv
  run_dir, *others = FLAGS.run_dir
  if others and FLAGS.format != "saved_model":
    raise InputError(f"--format={FLAGS.format} holds one decoder: export an "
                     "ensemble of runs with --format=saved_model")
  if FLAGS.format == "keras":
    from im2txt_ext import keras_format, runs
    keras_format.save_keras(run_dir, FLAGS.output, FLAGS.checkpoint)
    print(f"wrote {FLAGS.output} (its vocabulary: "
          f"{os.path.join(run_dir, runs.VOCAB_FILE)})")
    return
  if FLAGS.format == "tflite":
    from im2txt_ext import lite_export
    sizes = lite_export.export_tflite(
        run_dir, FLAGS.output, FLAGS.checkpoint, FLAGS.tflite_weights,
        FLAGS.beam_size, FLAGS.max_length, FLAGS.top_k, FLAGS.allow_unk,
        FLAGS.length_normalization)
    print(f"wrote {FLAGS.output} ({FLAGS.tflite_weights} weights)")
    for name, size in sizes.items():
      print(f"  {name}: {size / 1e6:.2f} MB")
    return
  from im2txt_ext import export
  signatures = export.export(FLAGS.run_dir, FLAGS.output, FLAGS.checkpoint,
                             FLAGS.beam_size, FLAGS.max_length, FLAGS.top_k,
                             FLAGS.max_pixels, FLAGS.allow_unk, FLAGS.xla,
                             FLAGS.length_normalization)
  print(f"wrote {FLAGS.output}")
  for name, (inputs, outputs) in signatures.items():
    print(f"  {name}({', '.join(inputs)}) -> {', '.join(outputs)}")


def entry():
  define_flags()
  run(main)


if __name__ == "__main__":
  entry()
