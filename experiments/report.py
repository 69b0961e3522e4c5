"""The comparison's report: table, learning curves, attention figures, HTML.

Reads what ``experiments/compare.py`` left in the results directory (each
run's test metrics, training summary and TensorBoard scalars, and the
retrieval baseline's metrics and captions) and writes:
  results.md    the table: mean and spread over seeds of each metric;
  results.json  the same numbers, per seed;
  the suite's ``results_file`` (e.g. docs/results/flickr8k.json), the
                table as rows a program reads (label, decoder, encoder,
                seeds, each metric's mean and sd, command, device, date),
                updated row by row, so a run of some experiments keeps
                the others' rows; ``python -m experiments.report
                --results_file=F`` prints it as the markdown table;
  curves.png    training cross-entropy and validation BLEU-4 against step;
  attention/    attention figures of the attention models on test images;
  report.html   every model's caption of each test image beside the
                references, images and figures inline (opens from disk).
"""

import base64
import datetime
import glob
import html
import io
import json
import math
import os

import numpy as np
from absl import flags
from PIL import Image

from experiments.suite import ensemble_dir

CURVES = ("cross_entropy", "val_bleu4")  # TensorBoard scalars plotted.


def read_json(path):
  with open(path) as f:
    return json.load(f)


def read_scalars(log_dir, tags=CURVES):
  """{tag: (steps, values)} of the TensorBoard scalars in ``log_dir``."""
  import tensorflow as tf
  points = {tag: {} for tag in tags}
  for path in sorted(glob.glob(os.path.join(log_dir, "events.out.tfevents*"))):
    for record in tf.data.TFRecordDataset(path):
      event = tf.compat.v1.Event.FromString(record.numpy())
      for value in event.summary.value:
        if value.tag in points:
          points[value.tag][event.step] = float(
              tf.make_ndarray(value.tensor)) if value.HasField("tensor") \
              else value.simple_value
  return {tag: (sorted(p), [p[s] for s in sorted(p)])
          for tag, p in points.items()}


def evaluation(folder):
  """An evaluation's metrics.json, with "distinct": the distinct captions
  over the images, from its captions.json (1 when no two images got the
  same caption; low when a model says the same few generic things)."""
  metrics = read_json(os.path.join(folder, "metrics.json"))
  captions = [c["generated"] for c in read_json(os.path.join(
      folder, "captions.json"))]
  metrics["distinct"] = len(set(captions)) / max(len(captions), 1)
  return metrics


def training_seconds(directory):
  """A run's training time with that of the run it started from
  (``train.init_from``), and so on back: what its row cost to train.
  A starting run without the driver's summary.json counts as 0, said."""
  seconds = read_json(os.path.join(directory, "summary.json"))["seconds"]
  start = read_json(os.path.join(directory, "config.json"))["train"].get(
      "init_from")
  if not start:
    return seconds
  if not os.path.exists(os.path.join(start, "summary.json")):
    print(f"{start}/summary.json: absent; the training time of {directory} "
          "counts its own run only")
    return seconds
  return seconds + training_seconds(start)


def collect(suite, output, seeds):
  """{experiment name: [dict(seeds, run_dir, test_dir, metrics, summary,
  seconds)]} for ``seeds`` {experiment name: its seeds}: one per seed, or
  for an ensemble one of all its seeds, its run_dir the first member's;
  ``seconds``: ``training_seconds`` (an ensemble's: its members' sum)."""
  runs = {}
  for experiment in suite.experiments:
    members = experiment.run_dirs(output, seeds[experiment.name])
    summaries = [read_json(os.path.join(d, "summary.json")) for d in members]
    if experiment.ensemble:
      test_dir = os.path.join(ensemble_dir(output, experiment.name), "test")
      devices = sorted({s.get("device", "unrecorded") for s in summaries})
      runs[experiment.name] = [{
          "seeds": seeds[experiment.name], "run_dir": members[0],
          "test_dir": test_dir, "metrics": evaluation(test_dir),
          "summary": {"device": "; ".join(devices)},
          "seconds": sum(map(training_seconds, members))}]
      continue
    runs[experiment.name] = [{
        "seeds": [seed], "run_dir": directory,
        "test_dir": os.path.join(directory, "test"),
        "metrics": evaluation(os.path.join(directory, "test")),
        "summary": summary, "seconds": training_seconds(directory)}
                             for seed, directory, summary in zip(
                                 seeds[experiment.name], members, summaries)]
  return runs


def mean_sd(values):
  """{"mean", "sd"} of the values that are not None: the sample standard
  deviation over seeds, None for one value; None for no values."""
  values = [v for v in values if v is not None]
  if not values:
    return None
  return {"mean": float(np.mean(values)),
          "sd": float(np.std(values, ddof=1)) if len(values) > 1 else None}


def cell(value, digits=3):
  """'m ± s', 'm', or 'n/a' for a ``mean_sd`` value."""
  if value is None:
    return "n/a"
  if value["sd"] is None:
    return f"{value['mean']:.{digits}f}"
  return f"{value['mean']:.{digits}f} ± {value['sd']:.{digits}f}"


def trained_side(directory):
  """The image side S a run was trained on, in pixels."""
  from im2txt_ext import runs
  from im2txt_ext.config import ExperimentConfig
  return runs.image_size(ExperimentConfig.load(
      os.path.join(directory, runs.CONFIG_FILE)))


def rows(suite, runs, retrieval, command=""):
  """The table as rows: the suite's experiments (``kind`` "measured"), the
  retrieval baseline and the published rows, each metric as ``mean_sd``.

  Args:
    command: the driver's command line without ``--only`` and ``--seeds``;
      a measured row's command adds ``--only=NAME``, and ``--seeds`` where
      its seeds are not the experiment's own.
  """
  measured = []
  own_seeds = suite.experiment_seeds()
  for experiment in suite.experiments:
    seeded = runs[experiment.name]
    seeds = [seed for r in seeded for seed in r["seeds"]]
    only = f" --only={experiment.name}"
    if seeds != own_seeds[experiment.name]:
      only += " --seeds=" + ",".join(map(str, seeds))
    config = read_json(os.path.join(seeded[0]["run_dir"], "config.json"))
    evaluated = max(os.path.getmtime(os.path.join(r["test_dir"],
                                                  "metrics.json"))
                    for r in seeded)  # The last of its seeds'.
    devices = sorted({r["summary"].get("device", "unrecorded")
                      for r in seeded})
    measured.append({
        "name": experiment.name, "label": experiment.label or
        experiment.name, "kind": "measured",
        "decoder": config["model"]["decoder"],
        "encoder": config["model"]["encoder"],
        "image_size": trained_side(seeded[0]["run_dir"]),
        "seeds": seeds,
        "metrics": {m: mean_sd([r["metrics"].get(m) for r in seeded])
                    for m in suite.metrics},
        "training_seconds": mean_sd([r["seconds"] for r in seeded]),
        "search": {key: seeded[0]["metrics"][key]
                   for key in ("method", "beam_size", "decoding")
                   if key in seeded[0]["metrics"]},
        "per_seed": [] if experiment.ensemble else [
            {"seed": r["seeds"][0], "metrics": {
                m: r["metrics"].get(m) for m in suite.metrics},
             "training_seconds": r["seconds"]} for r in seeded],
        "command": command + only if command else "",
        "device": "; ".join(devices),
        "date": datetime.datetime.fromtimestamp(
            evaluated, datetime.timezone.utc).date().isoformat()})
  baseline = {
      "name": "retrieval", "kind": "retrieval",
      "label": f"retrieval: {suite.retrieval_neighbours} nearest training "
               f"images, {suite.retrieval_consensus} consensus",
      "encoder": suite.encoder,
      "metrics": {m: mean_sd([retrieval.get(m)]) for m in suite.metrics},
      "training_seconds": {"mean": 0.0, "sd": None}}
  published = [{"name": p.label, "label": p.label, "kind": "published",
                "metrics": {m: mean_sd([p.metrics.get(m)])
                            for m in suite.metrics},
                "training_seconds": None} for p in suite.published]
  return measured + [baseline] + published


def table(metrics, table_rows):
  """The markdown table of ``rows`` in the ``metrics`` columns."""
  header = ["model", *metrics, "training s"]
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  for row in table_rows:
    cells = [cell(row["metrics"].get(m)) for m in metrics]
    seconds = row["training_seconds"]
    cells.append(cell(seconds, 0) if seconds else "")
    lines.append(f"| {row['label']} | " + " | ".join(cells) + " |")
  return "\n".join(lines)


def update_results_file(path, suite, new_rows, order=None):
  """Writes ``new_rows`` into the JSON table at ``path``: rows of the same
  name are replaced, the file's other measured rows kept, in ``order``
  (experiment names; default: the suite's), then the retrieval and
  published rows. Returns the document {"suite", "metrics", "rows"}."""
  kept = []
  if os.path.exists(path):
    kept = [row for row in read_json(path)["rows"]
            if row["kind"] == "measured"]
  by_name = {row["name"]: row for row in kept + new_rows
             if row["kind"] == "measured"}
  order = order or [e.name for e in suite.experiments]
  measured = sorted(by_name.values(), key=lambda row: (
      order.index(row["name"]) if row["name"] in order else len(order)))
  document = {"suite": suite.name, "metrics": suite.metrics,
              "rows": measured + [row for row in new_rows
                                  if row["kind"] != "measured"]}
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, "w") as f:
    json.dump(document, f, indent=1)
    f.write("\n")
  return document


def plot_curves(suite, runs, path):
  """Training cross-entropy and validation BLEU-4 per experiment of
  ``suite.curves`` (all when empty; mean over seeds at the steps all seeds
  logged)."""
  from matplotlib.figure import Figure
  figure = Figure(figsize=(11, 4))
  axes = figure.subplots(1, 2)
  titles = {"cross_entropy": "training cross-entropy (per word)",
            "val_bleu4": "validation BLEU-4 (greedy)"}
  for experiment in suite.trained():  # An ensemble's are its members'.
    if suite.curves and experiment.name not in suite.curves:
      continue
    scalars = [read_scalars(os.path.join(r["run_dir"], "train"))
               for r in runs[experiment.name]]
    for axis, tag in zip(axes, CURVES):
      steps = sorted(set.intersection(*(set(s[tag][0]) for s in scalars)))
      if not steps:
        continue
      values = [np.mean([dict(zip(*s[tag]))[step] for s in scalars])
                for step in steps]
      axis.plot(steps, values, label=experiment.label or experiment.name,
                marker="." if tag == "val_bleu4" else None)
  for axis, tag in zip(axes, CURVES):
    axis.set_title(titles[tag])
    axis.set_xlabel("step")
    axis.grid(alpha=0.3)
  axes[0].set_yscale("log")
  axes[1].legend(fontsize=7)
  figure.tight_layout()
  figure.savefig(path, format="png", dpi=100)


def attention_figures(suite, runs, records, output):
  """Attention PNGs of each attention experiment's first seed on the first
  ``suite.attention_images`` test records: {(experiment, image_id): path}."""
  from attention.visualize import attention_figure, caption_with_attention
  from im2txt_ext.models import decoder_class
  from im2txt_ext.config import ExperimentConfig
  from im2txt_ext.runs import TrainedModel
  figures = {}
  folder = os.path.join(output, "attention")
  os.makedirs(folder, exist_ok=True)
  for experiment in suite.trained():
    config = ExperimentConfig.load(experiment.config)
    if not decoder_class(config.model.decoder).has_attention:
      continue
    model = TrainedModel(runs[experiment.name][0]["run_dir"], "best",
                         with_encoder=True)
    for record in records[:suite.attention_images]:
      with open(record.image_path, "rb") as f:
        image, words, attention = caption_with_attention(model, f.read())
      side = math.isqrt(attention.shape[1])
      path = os.path.join(folder, f"{experiment.name}_{record.image_id}.png")
      attention_figure(image, words, attention, (side, side), path)
      figures[experiment.name, record.image_id] = path
  return figures


def data_uri(path, as_jpeg=False):
  """The file as a data URI; ``as_jpeg`` re-encodes it (attention figures
  over photographs are about 6 times smaller as JPEG than as PNG)."""
  if as_jpeg:
    buffer = io.BytesIO()
    Image.open(path).convert("RGB").save(buffer, "JPEG", quality=85)
    data, kind = buffer.getvalue(), "jpeg"
  else:
    with open(path, "rb") as f:
      data = f.read()
    kind = "png" if path.lower().endswith(".png") else "jpeg"
  return f"data:image/{kind};base64," + base64.b64encode(data).decode()


def model_captions(runs):
  """{experiment name: {image id: caption}} of each experiment's first seed
  on the test split."""
  return {name: {c["image_id"]: c["generated"] for c in read_json(
      os.path.join(seeded[0]["test_dir"], "captions.json"))}
          for name, seeded in runs.items()}


def caption_samples(suite, runs, retrieval_captions, records, figures):
  """The first ``suite.show_captions`` test images as text: a reference,
  each model's caption (first seed), the retrieval baseline's, and the
  images' attention figures."""
  labels = {e.name: e.label or e.name for e in suite.experiments}
  captions = model_captions(runs)
  by_label = {labels[name]: by_image for name, by_image in captions.items()}
  by_label["retrieval baseline"] = retrieval_captions
  width = max(map(len, by_label)) + 1
  lines = []
  for record in records[:suite.show_captions]:
    lines.append(f"{os.path.basename(record.image_path)} (a reference: "
                 f"{record.captions[0]!r})")
    lines.extend(f"  {label + ':':<{width}} {by_image[record.image_id]!r}"
                 for label, by_image in by_label.items())
    lines.extend(f"  where {labels[name]} looked: "
                 f"{figures[name, record.image_id]}"
                 for name in captions if (name, record.image_id) in figures)
  return "\n".join(lines)


def write_html(suite, runs, retrieval_captions, records, figures, table_md,
               path):
  """One self-contained page: images and figures inline as data URIs."""
  captions = model_captions(runs)
  labels = {e.name: e.label or e.name for e in suite.experiments}
  parts = [
      "<!doctype html><html><head><meta charset='utf-8'>",
      f"<title>{html.escape(suite.name)}: caption comparison</title>",
      "<style>body{font-family:sans-serif;max-width:1100px;margin:auto}"
      "table{border-collapse:collapse}td,th{border:1px solid #ccc;"
      "padding:3px 6px;font-size:13px;vertical-align:top}"
      ".image{display:flex;gap:16px;margin:18px 0;border-top:1px solid #999;"
      "padding-top:12px}.image img.photo{width:224px;height:auto}"
      "img.figure{max-width:100%}</style></head><body>",
      f"<h1>{html.escape(suite.name)}: caption comparison</h1>",
      "<p>Test images with the caption of each model (first seed, its "
      "test search) and the reference captions.</p>",
      markdown_table_html(table_md)]
  for record in records[:suite.report_images]:
    rows = "".join(
        f"<tr><th>{html.escape(labels[name])}</th>"
        f"<td>{html.escape(captions[name].get(record.image_id, ''))}</td></tr>"
        for name in captions)
    rows += (f"<tr><th>retrieval baseline</th><td>"
             f"{html.escape(retrieval_captions.get(record.image_id, ''))}"
             "</td></tr>")
    refs = "".join(f"<li>{html.escape(c)}</li>" for c in record.captions)
    parts.append(
        f"<div class='image' id='{html.escape(record.image_id)}'>"
        f"<img class='photo' src='{data_uri(record.image_path)}' "
        f"alt='{html.escape(record.image_id)}'><div>"
        f"<b>{html.escape(os.path.basename(record.image_path))}</b>"
        f"<table>{rows}</table><p>references:</p><ul>{refs}</ul>")
    for name in captions:
      figure = figures.get((name, record.image_id))
      if figure:
        source = data_uri(figure, as_jpeg=True)
        parts.append(f"<p>{html.escape(labels[name])}, where it looked:</p>"
                     f"<img class='figure' src='{source}'>")
    parts.append("</div></div>")
  parts.append("</body></html>")
  with open(path, "w", encoding="utf-8") as f:
    f.write("\n".join(parts))


def markdown_table_html(table_md):
  """The results table (markdown pipe table) as an HTML table."""
  lines = [line.strip("|").split("|") for line in table_md.splitlines()]
  head, body = lines[0], lines[2:]
  out = ["<table><tr>" + "".join(f"<th>{html.escape(c.strip())}</th>"
                                 for c in head) + "</tr>"]
  for row in body:
    out.append("<tr>" + "".join(f"<td>{html.escape(c.strip())}</td>"
                                for c in row) + "</tr>")
  return "".join(out) + "</table>"


def seeds_phrase(seeds):
  """"0, 1, 2" where every experiment of ``seeds`` {name: its seeds} has
  the same, else which has which: "0, 1, 2 for a, b; 0 for c"."""
  by_seeds = {}
  for name, own in seeds.items():
    by_seeds.setdefault(", ".join(map(str, own)), []).append(name)
  if len(by_seeds) == 1:
    return next(iter(by_seeds))
  return "; ".join(f"{listed} for {', '.join(names)}"
                   for listed, names in by_seeds.items())


def write_report(suite, output, seeds, paths, seconds, command="",
                 order=None):
  """Writes every report file of a finished comparison; returns the table,
  then the captions of the first ``suite.show_captions`` test images.
  ``seeds``: {experiment name: its seeds};
  ``command``: the driver's command line, recorded in the results file;
  ``order``: the whole suite's experiment names, the results file's row
  order (default: the suite's)."""
  from im2txt_ext.data import readers
  runs = collect(suite, output, seeds)
  retrieval = evaluation(os.path.join(output, "retrieval"))
  table_rows = rows(suite, runs, retrieval, command)
  table_md = table(suite.metrics, table_rows)
  if suite.results_file:
    update_results_file(suite.results_file, suite, table_rows, order)
  records = readers.read_dataset(paths["test_captions"], paths["images_dir"])
  if suite.test_split and any(r.split for r in records):
    records = readers.split_records(records, suite.test_split)
  figures = attention_figures(suite, runs, records, output)
  plot_curves(suite, runs, os.path.join(output, "curves.png"))
  retrieval_captions = {c["image_id"]: c["generated"] for c in read_json(
      os.path.join(output, "retrieval", "captions.json"))}
  write_html(suite, runs, retrieval_captions, records, figures, table_md,
             os.path.join(output, "report.html"))
  notes = sorted({n for seeded in runs.values() for r in seeded
                  for n in r["metrics"].get("notes", [])})
  summaries = [r["summary"] for seeded in runs.values() for r in seeded]
  devices = "; ".join(sorted({s["device"] for s in summaries
                              if "device" in s})) or "unrecorded devices"
  unrecorded = sum("device" not in s for s in summaries)
  if unrecorded and len(summaries) > unrecorded:
    devices += f" ({unrecorded} of the runs did not record theirs)"
  tuned = sorted(name for name, seeded in runs.items() if read_json(
      os.path.join(seeded[0]["run_dir"], "config.json"))["train"].get(
          "train_encoder_after", -1) >= 0)
  encoder_state = ("fine-tuned" if len(tuned) == len(runs) else
                   f"frozen, fine-tuned in {', '.join(tuned)}" if tuned else
                   "frozen")
  with open(os.path.join(output, "results.md"), "w") as f:
    size = f" at {suite.image_size} px" if suite.image_size else ""
    own = ", ".join(f"{e.name} at {e.image_size} px"
                    for e in suite.experiments
                    if e.image_size and e.image_size != suite.image_size)
    searches = "; ".join(
        f"{e.name}: " + ", ".join(f"{k} {v}" for k, v in e.decoding.items())
        for e in suite.trained() if e.decoding)
    f.write(f"# {suite.name}\n\n{len(records)} images of the "
            f"{suite.test_split or 'test'} split, beam {suite.beam_size}"
            f"{f' ({searches})' if searches else ''}; "
            f"mean ± sample standard deviation over seeds "
            f"{seeds_phrase(seeds)}; features: {suite.encoder}{size} "
            f"({suite.encoder_weights}{', ' + own if own else ''}), "
            f"{encoder_state}; trained on "
            f"{devices}.\n\n{table_md}\n\n"
            "Training s: a run started from another (train.init_from) "
            "counts that run's time too.\n\n"
            f"Whole comparison: {seconds / 60:.1f} minutes.\n\n"
            + "".join(f"- {n}\n" for n in notes))
  with open(os.path.join(output, "results.json"), "w") as f:
    json.dump({"suite": suite.name, "seeds": seeds, "seconds": seconds,
               # Per seed, or for an ensemble its seeds together.
               "experiments": {e.name: [{
                   **({"seeds": r["seeds"]} if e.ensemble else
                      {"seed": r["seeds"][0]}),
                   "metrics": r["metrics"], "summary": r["summary"]}
                                        for r in runs[e.name]]
                               for e in suite.experiments},
               "retrieval": retrieval}, f, indent=1)
  samples = caption_samples(suite, runs, retrieval_captions, records, figures)
  return table_md + ("\n\n" + samples if samples else "")


def define_flags():
  flags.DEFINE_string("results_file", None, "A comparison's JSON table (a "
                      "suite's results_file, e.g. docs/results/flickr8k.json) "
                      "to print as the markdown table.", required=True)


def main(argv):
  del argv
  from im2txt_ext.errors import InputError
  path = flags.FLAGS.results_file
  if not os.path.isfile(path):
    raise InputError("results file not found", path)
  document = read_json(path)
  print(table(document["metrics"], document["rows"]))


def entry():
  from im2txt_ext.cli import run
  define_flags()
  run(main)


if __name__ == "__main__":
  entry()
