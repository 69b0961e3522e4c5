r"""The decoding-options table: one trained run's captions of a split (the
dev split: decoding defaults are chosen there, never on test) under each
setting of a settings file, with their scores.

  python -m experiments.decoding \
      --run_dir=results/flickr8k/runs/soft_attention-seed0 \
      --captions=../shared/data/flickr8k/Flickr8k.token.txt --split=val \
      --settings=experiments/suites/decoding.json \
      --output=results/decoding/flickr8k_soft_attention_dev

The settings file is a list of {"label", "options"}: keyword arguments of
``Captioner.search`` (method, beam_size, length_penalty, min_length,
no_bad_endings, no_repeat_ngram_size, repetition_penalty,
diversity_groups, diversity_strength, top_p, ...). Writes table.md and
table.json: BLEU-4, METEOR, CIDEr-D, the share of distinct captions and
their mean length (words) per setting. The model is loaded once; images
come from the run's cached features where it was trained on them.
"""

import json
import os
import time

from absl import flags

from im2txt_ext.cli import run
from im2txt_ext.errors import InputError

FLAGS = flags.FLAGS
COLUMNS = ("BLEU-4", "METEOR", "CIDEr-D", "distinct", "mean length")


def define_flags():
  """This command's flags (see im2txt_ext.cli)."""
  flags.DEFINE_string("run_dir", None, "Training run directory.")
  flags.DEFINE_string("captions", None, "Caption file of the images.")
  flags.DEFINE_string("split", "val", "Split of the caption file (the dev "
                      "split: choose settings there); empty: all its images.")
  flags.DEFINE_string("images_dir", None, "Folder of the images; default: the "
                      "run config's data.images_dir.")
  flags.DEFINE_string("settings", "experiments/suites/decoding.json",
                      "Settings file: a list of {label, options}.")
  flags.DEFINE_string("output", None, "Folder for table.md and table.json.")
  flags.DEFINE_integer("limit", 0, "Only the first N images (0 = all).")
  flags.DEFINE_boolean("meteor", True, "Compute METEOR (needs Java).")
  flags.mark_flags_as_required(["run_dir", "captions", "output"])


def read_settings(path):
  """The settings of a settings file, checked before any model loads: a
  list of {"label", "options"} with distinct labels (they name the table's
  rows) and only options ``Captioner.search`` takes for the method. One-line
  InputError naming the file otherwise."""
  from im2txt_ext import decoding
  with open(path, encoding="utf-8") as f:
    try:
      settings = json.load(f)
    except json.JSONDecodeError as e:
      raise InputError(f"not JSON: {e}", path) from None
  if not isinstance(settings, list) or not all(
      isinstance(s, dict) and {"label", "options"} <= set(s)
      and isinstance(s["options"], dict) for s in settings):
    raise InputError("must be a list of {\"label\", \"options\"}", path)
  labels = [s["label"] for s in settings]
  repeated = sorted({label for label in labels if labels.count(label) > 1})
  if repeated:
    raise InputError(f"labels name the table's rows, and {repeated[0]!r} "
                     "names more than one", path)
  for setting in settings:
    try:
      decoding.check_search_args(setting["options"])
    except InputError as e:
      raise InputError(f"setting {setting['label']!r}: {e}", path) from None
  return settings


def score(candidates, references, meteor=True):
  """The table's columns for captions {image id: str}."""
  from im2txt_ext.metrics import caption_metrics
  metrics = caption_metrics(candidates, references, meteor=meteor)
  captions = list(candidates.values())
  metrics["distinct"] = len(set(captions)) / max(len(captions), 1)
  metrics["mean length"] = sum(len(c.split()) for c in captions) / max(
      len(captions), 1)
  return {name: metrics.get(name) for name in COLUMNS}


def markdown(rows):
  lines = ["| setting | " + " | ".join(COLUMNS) + " | seconds |",
           "|---" * (len(COLUMNS) + 2) + "|"]
  for row in rows:
    cells = ["n/a" if row[c] is None else f"{row[c]:.3f}" for c in COLUMNS]
    lines.append(f"| {row['label']} | " + " | ".join(cells) +
                 f" | {row['seconds']:.0f} |")
  return "\n".join(lines) + "\n"


def main(argv):
  del argv
  from im2txt_ext.data import readers
  from im2txt_ext.inference import Captioner
  from im2txt_ext.runs import CONFIG_FILE, cached_features
  from im2txt_ext.config import ExperimentConfig

  settings = read_settings(FLAGS.settings)
  config = ExperimentConfig.load(os.path.join(FLAGS.run_dir, CONFIG_FILE))
  on_features = bool(config.data.features)
  captioner = Captioner(FLAGS.run_dir, with_encoder=not on_features)
  features = cached_features(captioner.model.config) if on_features else None
  records = readers.read_dataset(
      FLAGS.captions, FLAGS.images_dir or config.data.images_dir)
  if FLAGS.split:
    records = readers.split_records(records, FLAGS.split, FLAGS.captions)
  records = records[:FLAGS.limit or None]
  references = {r.image_id: r.captions for r in records}
  os.makedirs(FLAGS.output, exist_ok=True)
  rows = []
  for i, setting in enumerate(settings, 1):
    started = time.time()
    candidates = captioner.caption_records(records, features,
                                           **setting["options"])
    row = {"label": setting["label"], "options": setting["options"],
           **score(candidates, references, FLAGS.meteor),
           "seconds": time.time() - started}
    rows.append(row)
    print(f"[{i}/{len(settings)}] {row['label']}: " + ", ".join(
        f"{c} {row[c]:.3f}" for c in COLUMNS if row[c] is not None),
          flush=True)
    with open(os.path.join(FLAGS.output, "table.json"), "w") as f:
      json.dump({"run_dir": FLAGS.run_dir, "split": FLAGS.split,
                 "images": len(records), "rows": rows}, f, indent=1)
    with open(os.path.join(FLAGS.output, "table.md"), "w") as f:
      f.write(markdown(rows))
  print(markdown(rows))


def entry():
  define_flags()
  run(main)


if __name__ == "__main__":
  entry()
