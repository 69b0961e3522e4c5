"""Exports a trained model as a self-contained SavedModel (image bytes in,
captions out; see im2txt_ext/export.py for the signatures).

  im2txt-export --run_dir=runs/demo --output=exports/demo
"""

from absl import flags

from im2txt_ext.cli import run

FLAGS = flags.FLAGS
flags.DEFINE_string("run_dir", None, "Training run directory (holds "
                    "config.json, vocab.txt and checkpoints).")
flags.DEFINE_string("output", None, "SavedModel folder to write; an existing "
                    "export there is replaced atomically.")
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
flags.DEFINE_boolean("xla", False, "Compile the search of serving_default "
                     "and caption_features with XLA (faster on CPU; compiled "
                     "again for each new batch size).")
flags.mark_flags_as_required(["run_dir", "output"])


def main(argv):
  del argv
  from im2txt_ext import export
  signatures = export.export(FLAGS.run_dir, FLAGS.output, FLAGS.checkpoint,
                             FLAGS.beam_size, FLAGS.max_length, FLAGS.top_k,
                             FLAGS.max_pixels, FLAGS.allow_unk, FLAGS.xla,
                             FLAGS.length_normalization)
  print(f"wrote {FLAGS.output}")
  for name, (inputs, outputs) in signatures.items():
    print(f"  {name}({', '.join(inputs)}) -> {', '.join(outputs)}")


def entry():
  run(main)


if __name__ == "__main__":
  entry()
