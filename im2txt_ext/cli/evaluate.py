r"""Evaluates a trained model on a dataset split with the COCO metrics.

  im2txt-evaluate --run_dir=runs/demo \
      --captions=data/scenes/captions_test.json --output_dir=runs/demo/eval
"""

import json
import os
import time

from absl import flags

from im2txt_ext.cli import run

FLAGS = flags.FLAGS
flags.DEFINE_string("run_dir", None, "Training run directory.")
flags.DEFINE_string("captions", None, "Caption file of the evaluation images "
                    "(any supported format).")
flags.DEFINE_string("images_dir", None, "Folder of the images; default: the "
                    "run config's data.images_dir.")
flags.DEFINE_string("split", "", "Use only records of this split (e.g. test) "
                    "when the file holds several.")
flags.DEFINE_string("features", "", "Cached features of these images (when "
                    "the model was trained on cached features).")
flags.DEFINE_enum("method", "beam", ["beam", "greedy"], "Search method.")
flags.DEFINE_integer("beam_size", 3, "Beams per image.")
flags.DEFINE_integer("max_length", 20, "Most words per caption.")
flags.DEFINE_integer("limit", 0, "Evaluate only the first N images (0 = "
                     "all).")
flags.DEFINE_integer("show", 5, "Print this many images' captions.")
flags.DEFINE_boolean("meteor", True, "Compute METEOR (needs Java).")
flags.DEFINE_enum("checkpoint", "best", ["best", "latest"], "Which "
                  "checkpoint.")
flags.DEFINE_string("output_dir", None, "Writes metrics.json and "
                    "captions.json (generated vs references) here; default: "
                    "<run_dir>/eval.")
flags.mark_flags_as_required(["run_dir", "captions"])


def main(argv):
  del argv
  from im2txt_ext.data import readers
  from im2txt_ext.inference import Captioner
  from im2txt_ext.metrics import caption_metrics
  from im2txt_ext.training.trainer import load_features

  captioner = Captioner(FLAGS.run_dir, FLAGS.checkpoint,
                        with_encoder=not FLAGS.features)
  config = captioner.model.config
  images_dir = FLAGS.images_dir or config.data.images_dir or None
  records = readers.read_dataset(FLAGS.captions, images_dir)
  if FLAGS.split:
    records = readers.split_records(records, FLAGS.split)
  records = records[:FLAGS.limit or None]
  features = None
  if FLAGS.features:
    config.data.features = FLAGS.features
    features = load_features(config)
  started = time.time()
  candidates = captioner.caption_records(
      records, features, method=FLAGS.method, beam_size=FLAGS.beam_size,
      max_length=FLAGS.max_length)
  seconds = time.time() - started
  references = {r.image_id: r.captions for r in records}
  metrics = caption_metrics(candidates, references, meteor=FLAGS.meteor)
  metrics.update(images=len(records), seconds=round(seconds, 2),
                 checkpoint_step=captioner.model.step, method=FLAGS.method,
                 beam_size=FLAGS.beam_size)
  output_dir = FLAGS.output_dir or os.path.join(FLAGS.run_dir, "eval")
  os.makedirs(output_dir, exist_ok=True)
  with open(os.path.join(output_dir, "metrics.json"), "w") as f:
    json.dump(metrics, f, indent=2)
  with open(os.path.join(output_dir, "captions.json"), "w") as f:
    json.dump([{"image_id": r.image_id, "image": r.image_path,
                "generated": candidates[r.image_id],
                "references": r.captions} for r in records], f, indent=1)
  for record in records[:FLAGS.show]:
    print(f"{os.path.basename(record.image_path)}: "
          f"{candidates[record.image_id]!r}   (a reference: "
          f"{record.captions[0]!r})")
  print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v)
                    for k, v in metrics.items()}))


def entry():
  run(main)


if __name__ == "__main__":
  entry()
