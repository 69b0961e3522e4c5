"""Captions image files with a trained or exported model
(``im2txt_ext.caption``).

  im2txt-caption --model=runs/demo --images=photo.jpg,more_photos/
  im2txt-caption --model=exports/demo --images=photo.jpg --beam_size=4 \
      --top_k=4 --diversity_groups=4 --diversity_strength=0.5
  im2txt-caption --model=runs/seed0,runs/seed1,runs/seed2 --images=photos/
"""

import json
import os

from absl import flags

from im2txt_ext.cli import decoding, run
from im2txt_ext.errors import InputError

FLAGS = flags.FLAGS


def define_flags():
  """This command's flags (see im2txt_ext.cli)."""
  decoding.define_flags()
  flags.DEFINE_string("model", None, "Training run directory (holds "
                      "config.json, vocab.txt and checkpoints), several "
                      "comma-separated (searched as one ensemble), or "
                      "export folder (from im2txt-export; beam search "
                      "only).")
  flags.DEFINE_string("run_dir", None, "The old name of --model, still "
                      "accepted.")
  flags.register_multi_flags_validator(
      ["model", "run_dir"],
      lambda values: (values["model"] is None) != (values["run_dir"] is None),
      "exactly one of --model and --run_dir must have a value")
  flags.DEFINE_list("images", None, "Image files and/or folders of images, "
                    "comma-separated.")
  flags.DEFINE_enum("method", "beam", ["beam", "greedy", "sample"],
                    "Search: batched beam search, greedy, or sampling.")
  flags.DEFINE_integer("beam_size", 3, "Beams per image (method=beam).")
  flags.DEFINE_integer("max_length", 20, "Most words per caption, <end> "
                       "included.")
  flags.DEFINE_integer("top_k", 1, "Captions printed per image (beam: at "
                       "most beam_size); for sampling, sample among the k "
                       "likeliest words (0 = all).")
  flags.DEFINE_float("temperature", 1.0, "Softmax temperature "
                     "(method=sample); above 0.")
  flags.register_validator("temperature", lambda t: t > 0,
                           "--temperature must be above 0")
  flags.DEFINE_enum("checkpoint", "best", ["best", "latest"], "Which "
                    "checkpoint: best validation BLEU-4 (CIDEr-D for SCST "
                    "runs) or the latest (run directories only).")
  flags.DEFINE_string("output", None, "Also write JSON lines here (one object "
                      "per image).")
  flags.DEFINE_integer("batch_size", 32, "Images per batch.", lower_bound=1)
  flags.DEFINE_boolean("allow_unk", False, "Let captions contain <unk> "
                       "(by default the search never emits it; an export "
                       "keeps the choice made at export time).")
  flags.mark_flags_as_required(["images"])


def main(argv):
  del argv
  from im2txt_ext import api
  from im2txt_ext.inference import Captioner, list_images
  paths = list_images(FLAGS.images)
  if FLAGS.output and not os.path.isdir(os.path.dirname(
      os.path.abspath(FLAGS.output))):  # Found now, not after captioning.
    raise InputError("no such folder to write into", FLAGS.output)
  model_paths = (FLAGS.model or FLAGS.run_dir).split(",")
  if api.model_kind(model_paths) == api.RUN:
    model = Captioner(model_paths, FLAGS.checkpoint,
                      allow_unk=FLAGS.allow_unk)
  elif FLAGS["checkpoint"].present or FLAGS["allow_unk"].present:
    raise InputError("--checkpoint and --allow_unk are for run directories: "
                     "an export keeps those chosen at export time",
                     model_paths[0])
  else:
    model = api.load(model_paths[0])
  # The decoding options given: the others take the model's defaults.
  search_args = dict(method=FLAGS.method, max_length=FLAGS.max_length, **{
      name: value for name, value in decoding.search_options(
          FLAGS.method).items() if FLAGS[name].present})
  if FLAGS.method == "beam":
    search_args.update(beam_size=FLAGS.beam_size, top_k=FLAGS.top_k)
  elif FLAGS.method == "sample":
    search_args.update(temperature=FLAGS.temperature, top_k=FLAGS.top_k)
  per_image = api.caption(paths, model=model, batch_size=FLAGS.batch_size,
                          attention=api.has_attention(model), **search_args)
  results = [{"image": path, "caption": options[0]["caption"],
              "log_prob": options[0]["log_prob"], "captions": options}
             for path, options in zip(paths, per_image)]
  for result in results:
    for option in result["captions"][:max(FLAGS.top_k, 1)]:
      print(f"{result['image']}\t{option['caption']}\t"
            f"{option['log_prob']:.3f}")
  if FLAGS.output:
    with open(FLAGS.output, "w", encoding="utf-8") as f:
      for result in results:
        f.write(json.dumps(result) + "\n")


def entry():
  define_flags()
  run(main)


if __name__ == "__main__":
  entry()
