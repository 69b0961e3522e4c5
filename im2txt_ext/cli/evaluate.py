r"""Evaluates a trained model on a dataset split with the COCO metrics.

  im2txt-evaluate --run_dir=runs/demo \
      --captions=data/scenes/captions_test.json --output_dir=runs/demo/eval
  im2txt-evaluate --export=exports/demo \
      --captions=data/scenes/captions_test.json \
      --images_dir=data/scenes/images
  im2txt-evaluate --run_dir=runs/seed0,runs/seed1,runs/seed2 \
      --captions=data/scenes/captions_test.json --output_dir=eval/ensemble

Writes metrics.json (BLEU-1..4, METEOR, ROUGE-L, CIDEr-D against all
references of each image; perplexity of the references for checkpoints) and
captions.json (generated vs reference captions per image).
"""

import os
import time

from absl import flags

from im2txt_ext.cli import decoding, run
from im2txt_ext.errors import InputError

FLAGS = flags.FLAGS


def define_flags():
  """This command's flags (see im2txt_ext.cli)."""
  decoding.define_flags()
  flags.DEFINE_list("run_dir", None, "Training run directory (or give "
                    "--export); several, comma-separated: their ensemble, "
                    "searched as one model (runs on the same cached "
                    "features and vocabulary; give --output_dir).")
  flags.DEFINE_string("export", None, "Exported SavedModel directory (from "
                      "im2txt-export) instead of a run directory; it captions "
                      "the image files with its caption_with_options "
                      "signature (beam search only; no perplexity).")
  flags.DEFINE_string("captions", None, "Caption file of the evaluation "
                      "images (any supported format).")
  flags.DEFINE_string("images_dir", None, "Folder of the images; default: the "
                      "run config's data.images_dir (with --export: needed "
                      "unless the caption file's image paths are complete).")
  flags.DEFINE_string("split", "", "Use only records of this split (e.g. "
                      "test) when the file holds several.")
  flags.DEFINE_string("features", "", "Cached features of these images (when "
                      "the model was trained on cached features).")
  flags.DEFINE_enum("method", "beam", ["beam", "greedy"], "Search method "
                    "(decoding options: see their flags).")
  flags.DEFINE_integer("beam_size", 3, "Beams per image.")
  flags.DEFINE_multi_string("set", [], "Change a field of the run's saved "
                            "config for this evaluation (what only inference "
                            "reads), e.g. --set model.decoder_options."
                            "inference=expectation for hard attention.")
  flags.DEFINE_integer("max_length", 20, "Most words per caption.")
  flags.DEFINE_integer("batch_size", 64, "Images per batch (a smaller one "
                       "lowers the memory peak with images at a large "
                       "size).", lower_bound=1)
  flags.DEFINE_integer("limit", 0, "Evaluate only the first N images (0 = "
                       "all).")
  flags.DEFINE_integer("show", 5, "Print this many images' captions.")
  flags.DEFINE_boolean("meteor", True, "Compute METEOR (needs Java).")
  flags.DEFINE_boolean("allow_unk", False, "Let captions contain <unk> "
                       "(by default the search never emits it; an export "
                       "keeps the choice made at export time).")
  flags.DEFINE_boolean("perplexity", True, "Also compute the perplexity of "
                       "the reference captions (checkpoints only).")
  flags.DEFINE_enum("checkpoint", "best", ["best", "latest"], "Which "
                    "checkpoint.")
  flags.DEFINE_string("output_dir", None, "Writes metrics.json and "
                      "captions.json (generated vs references) here; default: "
                      "<run_dir>/eval or <export>/eval.")
  flags.mark_flags_as_required(["captions"])


def _run_config():
  """The run's saved config, or None (no --run_dir, or not a run: the
  captioner then says what is wrong)."""
  from im2txt_ext.config import ExperimentConfig
  from im2txt_ext.runs import CONFIG_FILE
  if not FLAGS.run_dir:
    return None
  path = os.path.join(FLAGS.run_dir[0], CONFIG_FILE)
  return ExperimentConfig.load(path) if os.path.isfile(path) else None


def caption_with_checkpoint(records, run_config):
  """({image_id: caption}, extra metrics) from the run's checkpoint."""
  from im2txt_ext import runs
  from im2txt_ext.inference import Captioner
  from im2txt_ext.training.losses import perplexity
  if FLAGS.features and run_config and not run_config.data.features:
    raise InputError("this run was trained from images, so its checkpoint "
                     "holds its encoder's weights: evaluate it without "
                     "--features", FLAGS.run_dir[0])
  captioner = Captioner(FLAGS.run_dir, FLAGS.checkpoint,
                        with_encoder=not FLAGS.features,
                        allow_unk=FLAGS.allow_unk, overrides=FLAGS.set)
  features = None
  if FLAGS.features:
    captioner.model.config.data.features = FLAGS.features
    features = runs.cached_features(captioner.model.config)
  candidates = captioner.caption_records(
      records, features, batch_size=FLAGS.batch_size,
      method=FLAGS.method, beam_size=FLAGS.beam_size,
      max_length=FLAGS.max_length, **decoding.search_options(FLAGS.method))
  extra = {"checkpoint_step": captioner.model.step}
  if len(captioner.members) > 1:
    extra.update(ensemble=FLAGS.run_dir, checkpoint_step=[
        m.step for m in captioner.members])
  if FLAGS.set:
    extra["overrides"] = FLAGS.set
  if FLAGS.perplexity:
    extra["perplexity"] = perplexity(
        captioner.decoder, captioner.reference_batches(
            records, features, batch_size=FLAGS.batch_size))
  return candidates, extra


def caption_with_export(records):
  """({image_id: caption}, extra metrics) from an exported SavedModel."""
  import tensorflow as tf
  from im2txt_ext import export
  from im2txt_ext.data.tfrecords import read_image_bytes
  if FLAGS.method != "beam":
    raise InputError("an export captions with beam search only; drop "
                     "--method", FLAGS.export)
  options = decoding.search_options("beam")
  if options.pop("length_normalization") != "plain":
    raise InputError("an export's length normalisation is chosen at export "
                     "time (im2txt-export --length_normalization): drop "
                     "--length_normalization", FLAGS.export)
  caption = export.load(FLAGS.export).signatures["caption_with_options"]
  candidates = {}
  for i in range(0, len(records), FLAGS.batch_size):
    chunk = records[i:i + FLAGS.batch_size]
    out = caption(images=tf.constant([read_image_bytes(r.image_path)
                                      for r in chunk]),
                  beam_size=tf.constant(FLAGS.beam_size),
                  max_length=tf.constant(FLAGS.max_length),
                  k=tf.constant(1), **{name: tf.constant(value)
                                       for name, value in options.items()})
    for record, text in zip(chunk, out["captions"][:, 0].numpy()):
      candidates[record.image_id] = text.decode()
  return candidates, {"export": FLAGS.export}


def main(argv):
  del argv
  from im2txt_ext.data import readers
  from im2txt_ext.metrics import caption_metrics, save_evaluation

  if bool(FLAGS.run_dir) == bool(FLAGS.export):
    raise InputError("give exactly one of --run_dir and --export")
  if FLAGS.run_dir and len(FLAGS.run_dir) > 1 and not FLAGS.output_dir:
    raise InputError("an ensemble has no run directory of its own to write "
                     "into: give --output_dir")
  if FLAGS.export and FLAGS.set:
    raise InputError("--set changes a run's config; an export has none",
                     FLAGS.export)
  run_config = _run_config()
  images_dir = FLAGS.images_dir or (run_config and
                                    run_config.data.images_dir)
  records = readers.read_dataset(FLAGS.captions, images_dir or None)
  if FLAGS.export and not images_dir and records and not os.path.isfile(
      records[0].image_path):
    raise InputError(f"image {records[0].image_path!r} not found: give "
                     "--images_dir, the folder of the file's images (an "
                     "export has no config that says it)", FLAGS.captions)
  if FLAGS.split:
    records = readers.split_records(records, FLAGS.split, FLAGS.captions)
  records = records[:FLAGS.limit or None]
  started = time.time()
  if FLAGS.run_dir:
    candidates, extra = caption_with_checkpoint(records, run_config)
  else:
    candidates, extra = caption_with_export(records)
  seconds = time.time() - started
  references = {r.image_id: r.captions for r in records}
  metrics = caption_metrics(candidates, references, meteor=FLAGS.meteor)
  metrics.update(extra, images=len(records), seconds=round(seconds, 2),
                 method=FLAGS.method,
                 **({"beam_size": FLAGS.beam_size}
                    if FLAGS.method == "beam" else {}),
                 decoding=decoding.search_options(FLAGS.method))
  output_dir = FLAGS.output_dir or os.path.join(
      FLAGS.run_dir[0] if FLAGS.run_dir else FLAGS.export, "eval")
  save_evaluation(output_dir, records, candidates, metrics, FLAGS.show)


def entry():
  define_flags()
  run(main)


if __name__ == "__main__":
  entry()
