"""make compare's driver end to end on tiny data: features, word2vec, four
experiments (two starting from another's run) over two seeds (two of them
with a seed of their own), an ensemble of one's seeds, two trainings side by
side, evaluation, the retrieval baseline and every report file; then a
second call that finds everything done."""

import datetime
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from conftest import REPO, REPORTS_TENSORFLOW


def write_json(path, value):
  path.write_text(json.dumps(value))
  return str(path)


def tiny_config(path, decoder):
  return write_json(path, {
      "name": f"tiny-{decoder}",
      "model": {"decoder": decoder, "embedding_size": 16, "hidden_size": 16,
                "dropout": 0.0},
      "train": {"num_steps": 12, "batch_size": 16, "checkpoint_every": 6,
                "validate_every": 6, "validation_images": 8,
                "log_every": 3, "learning_rate": 0.005}})


def test_compare_end_to_end(scene_data, tmp_path):
  from im2txt_ext.encoders.backbones import build_encoder
  root, _ = scene_data
  # A fixed random scene_cnn, saved, so that extraction and the attention
  # figures use the same encoder.
  weights = str(tmp_path / "scene_cnn.weights.h5")
  build_encoder("scene_cnn", None, 32).get_layer("scene_cnn") \
      .save_weights(weights)
  suite = write_json(tmp_path / "suite.json", {
      "name": "tiny",
      "train_captions": "captions_train.json",
      "val_captions": "captions_val.json",
      "test_captions": "captions_test.json",
      "encoder": "scene_cnn", "encoder_weights": weights, "image_size": 32,
      "seeds": [0, 1], "beam_size": 2, "max_length": 8,
      "retrieval_neighbours": 3,
      "word2vec": ["--dim=16", "--min_count=1", "--epochs=1"],
      "report_images": 5, "attention_images": 2, "curves": ["st", "soft_w2v"],
      "metrics": ["BLEU-1", "BLEU-2", "CIDEr-D", "perplexity", "distinct"],
      "published": [{"label": "paper: X", "metrics": {"BLEU-2": 0.448}}],
      "results_file": str(tmp_path / "docs" / "tiny.json"),
      "experiments": [
          {"name": "st", "label": "Show and Tell",
           "config": tiny_config(tmp_path / "st.json", "show_and_tell"),
           "evaluate_set": ["model.dropout=0.0"],
           "decoding": {"beam_size": 3, "length_penalty": 0.5,
                        "no_bad_endings": True}},
          {"name": "soft_w2v", "label": "Soft attention, word2vec",
           "seeds": [1],
           "image_size": 48,  # Its own side: a 6x6 map, not 4x4.
           "config": tiny_config(tmp_path / "soft.json", "soft_attention"),
           "set": ["model.embeddings_init={word2vec}"]},
          {"name": "st_scst", "label": "Show and Tell + SCST", "seeds": [1],
           "config": tiny_config(tmp_path / "st.json", "show_and_tell"),
           "decoding": {"method": "greedy"},
           "set": ["train.init_from={run:st}", "train.scst=true",
                   "train.scst_samples=2", "train.num_steps=3",
                   "train.checkpoint_every=3", "train.validate_every=3"]},
          {"name": "st_cnn", "label": "Show and Tell, CNN fine-tuned",
           "seeds": [0],
           "config": tiny_config(tmp_path / "st.json", "show_and_tell"),
           "set": ["train.init_from={run:st}", "data.features=",
                   "train.train_encoder_after=0",
                   "train.encoder_learning_rate_scale=0.1",
                   "train.num_steps=2", "train.checkpoint_every=2",
                   "train.validate_every=2"]},
          {"name": "st_ensemble", "label": "Show and Tell, ensemble",
           "ensemble": "st"}]})
  output = tmp_path / "results"
  command = [sys.executable, "-m", "experiments.compare", f"--suite={suite}",
             f"--data={root}", f"--output={output}", "--meteor=false"]
  env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="2")
  result = subprocess.run(command + ["--jobs=2"], capture_output=True,
                          text=True, cwd=str(REPO), env=env, timeout=600)
  assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
  assert "[15/15] retrieval baseline ..." in result.stdout
  # Side by side, each step says when it starts and when it ends; a run
  # that starts from another's starts after that one's test evaluation.
  lines = result.stdout.splitlines()
  def line(pattern):
    return next(i for i, text in enumerate(lines) if pattern in text)
  assert line("evaluate st seed 1: ") < line(
      "train st_scst seed 1 ...") < line("train st_scst seed 1: ")
  assert "st_scst seed 0" not in result.stdout  # Its own seeds only.
  # The ensemble trains nothing, and is evaluated once its members are.
  assert "st_ensemble seed" not in result.stdout
  assert line("evaluate st seed 0: ") < line(
      "evaluate st_ensemble (ensemble of st seeds 0, 1) ...")
  assert line("evaluate st seed 1: ") < line(
      "evaluate st_ensemble (ensemble of st seeds 0, 1) ...")

  table = (output / "results.md").read_text()
  rows = [line for line in table.splitlines() if line.startswith("| ")]
  cells = [[c.strip() for c in r.split("|")[1:-1]] for r in rows]
  assert cells[0] == ["model", "BLEU-1", "BLEU-2", "CIDEr-D", "perplexity",
                      "distinct", "training s"]
  assert [r[0] for r in cells[1:]] == [
      "Show and Tell", "Soft attention, word2vec", "Show and Tell + SCST",
      "Show and Tell, CNN fine-tuned", "Show and Tell, ensemble",
      "retrieval: 3 nearest training images, cider consensus", "paper: X"]
  assert "±" in rows[1]  # Two seeds: mean and spread.
  assert cells[-1][1:] == ["n/a", "0.448", "n/a", "n/a", "n/a", ""]
  retrieval = cells[-2]
  captions = [c["generated"] for c in json.loads(
      (output / "retrieval" / "captions.json").read_text())]
  assert retrieval[5] == f"{len(set(captions)) / len(captions):.3f}"
  from im2txt_ext import devices
  assert f"trained on {devices.describe()}." in table
  assert " images of the test split, beam 2 (st: beam_size 3, " \
      "length_penalty 0.5, no_bad_endings True; st_scst: method greedy); " \
      "mean ± sample standard deviation over seeds 0, 1 for st, " \
      "st_ensemble; 1 for soft_w2v, st_scst; 0 for st_cnn;" \
      in table
  assert f"features: scene_cnn at 32 px ({weights}, soft_w2v at 48 px), " \
      "frozen, fine-tuned in st_cnn; trained on" in table
  # Features at each side, extracted once: the attention model's at its own.
  from im2txt_ext.encoders.features import read_index
  assert sorted(os.listdir(output / "features")) == [
      "scene_cnn_48px_spatial.json", "scene_cnn_48px_spatial.npy",
      "scene_cnn_pooled.json", "scene_cnn_pooled.npy"]
  spatial = read_index(str(output / "features" / "scene_cnn_48px_spatial.npy"))
  assert (spatial["image_size"], spatial["shape"][1]) == (48, 36)
  results = json.loads((output / "results.json").read_text())
  # The test evaluation took the experiment's overrides, and says so.
  assert [r["metrics"].get("overrides") for r in
          results["experiments"]["st"]] == [["model.dropout=0.0"]] * 2
  assert "overrides" not in results["experiments"]["soft_w2v"][0]["metrics"]
  # And its decoding options; the others' searches kept the defaults.
  from im2txt_ext import decoding
  chosen = dict(decoding.defaults_of("beam"), length_penalty=0.5,
                no_bad_endings=True)
  assert [r["metrics"]["decoding"] for r in
          results["experiments"]["st"]] == [chosen] * 2
  assert results["experiments"]["soft_w2v"][0]["metrics"]["decoding"] == \
      decoding.defaults_of("beam")
  for name, seeds in (("st", [0, 1]), ("soft_w2v", [1])):
    assert [r["seed"] for r in results["experiments"][name]] == seeds
    assert all(r["summary"]["steps"] == 12
               for r in results["experiments"][name])
  assert 0 <= results["retrieval"]["BLEU-4"] <= 1
  config = json.loads((output / "runs" / "soft_w2v-seed1" /
                       "config.json").read_text())
  assert config["model"]["embeddings_init"] == str(output / "word2vec")
  assert config["train"]["seed"] == 1
  scst = json.loads((output / "runs" / "st_scst-seed1" /
                     "config.json").read_text())["train"]
  assert scst["scst"] and scst["init_from"] == str(output / "runs" /
                                                   "st-seed1")
  assert [r["summary"]["steps"] for r in
          results["experiments"]["st_scst"]] == [3]
  # Trained from the images, its CNN fine-tuned, and evaluated on them
  # with that CNN (cached features would have been refused).
  cnn = json.loads((output / "runs" / "st_cnn-seed0" /
                    "config.json").read_text())
  assert cnn["data"]["features"] == "" and cnn["train"][
      "train_encoder_after"] == 0
  assert [r["summary"]["steps"] for r in
          results["experiments"]["st_cnn"]] == [2]
  assert 0 <= results["experiments"]["st_cnn"][0]["metrics"]["BLEU-1"] <= 1

  # The machine-readable table, and the markdown made from it.
  document = json.loads((tmp_path / "docs" / "tiny.json").read_text())
  st = document["rows"][0]
  assert (st["name"], st["decoder"], st["encoder"], st["seeds"]) == (
      "st", "show_and_tell", "scene_cnn", [0, 1])
  assert [r["image_size"] for r in document["rows"][:4]] == [32, 48, 32, 32]
  bleu = [r["metrics"]["BLEU-1"] for r in results["experiments"]["st"]]
  assert st["metrics"]["BLEU-1"] == pytest.approx(
      {"mean": np.mean(bleu), "sd": np.std(bleu, ddof=1)})
  assert st["per_seed"] == [
      {"seed": r["seed"], "metrics": {m: r["metrics"].get(m) for m in (
          "BLEU-1", "BLEU-2", "CIDEr-D", "perplexity", "distinct")},
       "training_seconds": r["summary"]["seconds"]}
      for r in results["experiments"]["st"]]
  assert st["command"] == f"python -m experiments.compare --suite={suite} " \
      f"--data={root} --output={output} --only=st"
  assert st["device"] == devices.describe() and len(st["date"]) == 10
  assert st["search"] == {"method": "beam", "beam_size": 3,
                          "decoding": chosen}
  assert document["rows"][1]["search"]["beam_size"] == 2  # The suite's.
  assert document["rows"][2]["search"] == {
      "method": "greedy", "decoding": decoding.defaults_of("greedy")}
  assert [r["kind"] for r in document["rows"]] == [
      "measured"] * 5 + ["retrieval", "published"]
  # A row started from another run counts that run's training time too.
  seconds = {name: {r["seed"]: r["summary"]["seconds"] for r in seeded}
             for name, seeded in results["experiments"].items()
             if name != "st_ensemble"}
  for row in document["rows"][2:4]:
    assert row["seeds"] == list(seconds[row["name"]])
    assert row["training_seconds"]["mean"] == pytest.approx(np.mean(
        [seconds["st"][seed] + seconds[row["name"]][seed]
         for seed in row["seeds"]]))
  # The ensemble: one evaluation of st's two runs searched as one model,
  # with st's evaluation overrides; its training time is theirs together.
  ensemble = document["rows"][4]
  evaluated = results["experiments"]["st_ensemble"]
  assert (ensemble["seeds"], ensemble["per_seed"]) == ([0, 1], [])
  assert [r["seeds"] for r in evaluated] == [[0, 1]]
  assert evaluated[0]["metrics"]["ensemble"] == [
      str(output / "runs" / f"st-seed{seed}") for seed in (0, 1)]
  assert evaluated[0]["metrics"]["overrides"] == ["model.dropout=0.0"]
  assert ensemble["search"]["decoding"] == chosen
  assert ensemble["metrics"]["BLEU-1"] == {
      "mean": evaluated[0]["metrics"]["BLEU-1"], "sd": None}
  assert ensemble["training_seconds"] == {
      "mean": pytest.approx(sum(seconds["st"].values())), "sd": None}
  printed = subprocess.run(
      [sys.executable, "-m", "experiments.report",
       f"--results_file={tmp_path / 'docs' / 'tiny.json'}"],
      capture_output=True, text=True, cwd=str(REPO), env=env, timeout=300)
  assert printed.returncode == 0, printed.stderr[-2000:]
  assert printed.stdout.strip() == "\n".join(
      line for line in table.splitlines() if line.startswith("|"))

  assert (output / "curves.png").read_bytes()[:4] == b"\x89PNG"
  figures = sorted(os.listdir(output / "attention"))
  assert len(figures) == 2 and figures[0].startswith("soft_w2v_")
  html = (output / "report.html").read_text()
  assert html.count("class='image'") == 5
  assert html.count("data:image/png;base64,") == 5  # The photos.
  assert html.count("data:image/jpeg;base64,") == 2  # Attention figures.
  assert "Soft attention, word2vec" in html and "references:" in html

  # Everything is done: a second call skips every step and rewrites the
  # report from what is there. A row's date is its last seed's evaluation.
  for seed, day in ((0, "2020-01-01"), (1, "2021-06-01")):
    noon = datetime.datetime.fromisoformat(f"{day}T12:00:00+00:00")
    os.utime(output / "runs" / f"st-seed{seed}" / "test" / "metrics.json",
             (noon.timestamp(), noon.timestamp()))
  again = subprocess.run(command, capture_output=True, text=True,
                         cwd=str(REPO), env=env, timeout=300)
  assert again.returncode == 0, again.stderr[-3000:]
  assert again.stdout.count("done before, skipped") == 15
  document = json.loads((tmp_path / "docs" / "tiny.json").read_text())
  assert document["rows"][0]["date"] == "2021-06-01"

  # Running some seeds (--seeds) adds them to their row, not replaces it;
  # a row of other seeds than its experiment's own names them.
  some = subprocess.run(command + ["--only=st", "--seeds=1"],
                        capture_output=True, text=True, cwd=str(REPO),
                        env=env, timeout=300)
  assert some.returncode == 0, some.stderr[-3000:]
  st = json.loads((tmp_path / "docs" / "tiny.json").read_text())["rows"][0]
  assert (st["name"], st["seeds"]) == ("st", [0, 1])
  assert st["command"] == f"python -m experiments.compare --suite={suite} " \
      f"--data={root} --output={output} --only=st"
  from experiments import report, status
  from experiments.suite import Suite
  loaded = Suite.load(str(suite))
  own = loaded.experiment_seeds()
  assert loaded.reported_seeds(str(output), dict(own, st=[1])) == own
  assert loaded.reported_seeds(str(output), dict(own, st=[7]))["st"] == [
      0, 1, 7]
  commands = [row["command"] for row in report.rows(
      loaded, report.collect(loaded, str(output), dict(own, st=[1])), {},
      "cmd")[:2]]
  assert commands == ["cmd --only=st --seeds=1", "cmd --only=soft_w2v"]

  # How far it is (--status), from what it left: all done; then a run
  # with a checkpoint and no summary, and one with nothing.
  done = "trained, evaluated on test"
  assert status.report(Suite.load(str(suite)), str(output)) == [
      "spatial features at 48 px: done", "pooled features at 32 px: done",
      f"st seed 0: {done}", f"st seed 1: {done}",
      f"soft_w2v seed 1: {done}",
      f"st_scst seed 1: {done}", f"st_cnn seed 0: {done}",
      "st_ensemble (ensemble of st seeds 0, 1): evaluated on test"]
  os.remove(output / "runs" / "st-seed1" / "summary.json")
  shutil.rmtree(output / "runs" / "st-seed1" / "test")
  shutil.rmtree(output / "runs" / "st_cnn-seed0")
  lines = status.report(Suite.load(str(suite)), str(output))
  assert re.fullmatch(r"st seed 1: step 12 of 12 \(checkpoint of "
                      r"\d{4}-\d\d-\d\d \d\d:\d\d\)", lines[3])
  assert lines[6] == "st_cnn seed 0: not started"
  # The command asks it without importing TensorFlow (seconds of start-up).
  stub = REPORTS_TENSORFLOW + "from experiments.compare import entry; entry()"
  asked = subprocess.run(
      [sys.executable, "-c", stub, f"--suite={suite}", f"--output={output}",
       "--status"], capture_output=True, text=True, timeout=120, cwd=REPO,
      env=dict(os.environ, PYTHONPATH=str(REPO)))
  assert asked.returncode == 0, asked.stderr[-3000:]
  assert "st_cnn seed 0: not started" in asked.stdout
  assert "TensorFlow imported" not in asked.stderr


def test_side_by_side_keeps_order_and_the_limit():
  """Tasks run at most ``jobs`` at a time, each after those it needs."""
  from experiments.compare import side_by_side
  lock, events, running = threading.Lock(), [], []

  def task(key):
    def run():
      with lock:
        running.append(key)
        events.append(("start", key, len(running)))
      time.sleep(0.05)
      with lock:
        running.remove(key)
        events.append(("end", key))
    return run
  tasks = {("a", 0): ([], task("a0")), ("a", 1): ([], task("a1")),
           ("b", 0): ([("a", 0), ("elsewhere", 0)], task("b0")),
           ("b", 1): ([("a", 1)], task("b1")), ("c", 0): ([], task("c0"))}
  side_by_side(tasks, jobs=2)
  starts = [e for e in events if e[0] == "start"]
  assert sorted(e[1] for e in starts) == ["a0", "a1", "b0", "b1", "c0"]
  assert max(e[2] for e in starts) == 2  # Two at once, never three.
  for first, then in (("a0", "b0"), ("a1", "b1")):
    assert events.index(("end", first)) < events.index(
        next(e for e in starts if e[1] == then))
  events.clear()
  side_by_side(tasks, jobs=1)
  assert [e[1] for e in events if e[0] == "start"] == [
      "a0", "a1", "b0", "b1", "c0"]  # One at a time: the given order.


def test_side_by_side_steps_print_whole_lines(tmp_path, capsys):
  """Steps running in several threads print each line whole: a number and
  what started, or the same and its seconds, never two lines run together."""
  from concurrent.futures import ThreadPoolExecutor

  from experiments.compare import Step
  step = Step(str(tmp_path), total=8, side_by_side=True)
  with ThreadPoolExecutor(4) as pool:
    list(pool.map(lambda i: step(f"task {i}", "platform", [], f"t{i}"),
                  range(8)))
  lines = capsys.readouterr().out.splitlines()
  assert len(lines) == 16
  started = [re.fullmatch(r"\[(\d)/8\] task (\d) \.\.\.", line)
             for line in lines if line.endswith("...")]
  ended = [re.fullmatch(r"(\[\d/8\] task \d): \d+ s", line)
           for line in lines if not line.endswith("...")]
  assert all(started) and all(ended) and len(started) == len(ended) == 8
  assert sorted(int(m[1]) for m in started) == list(range(1, 9))
  assert sorted(int(m[2]) for m in started) == list(range(8))
  assert {m[0][:-4] for m in started} == {m[1] for m in ended}


def test_a_step_writes_its_output_to_its_log_as_it_comes(tmp_path,
                                                         monkeypatch):
  """A step's stdout reaches its log line by line while it runs (a long
  training's progress), and is returned whole when it ends."""
  import threading

  from experiments.compare import Step
  (tmp_path / "two_parts.py").write_text(
      "import os, sys, time\n"
      "print('first part', flush=True)\n"
      "for _ in range(600):  # Until the test has seen the first part.\n"
      "  if os.path.exists(sys.argv[1]):\n"
      "    break\n"
      "  time.sleep(0.1)\n"
      "print('second part')\n")
  monkeypatch.setenv("PYTHONPATH", str(tmp_path))
  go, log = tmp_path / "go", tmp_path / "out" / "logs" / "two.log"
  step = Step(str(tmp_path / "out"), total=1)
  result = []
  thread = threading.Thread(target=lambda: result.append(
      step("two parts", "two_parts", [str(go)], "two")))
  thread.start()
  seen = False
  for _ in range(600):
    if "first part" in (log.read_text() if log.exists() else ""):
      seen = True
      break
    time.sleep(0.1)
  go.touch()
  thread.join(timeout=120)
  assert seen, "the first part reached the log only at the end"
  assert result == ["first part\nsecond part\n"]
  assert log.read_text().splitlines()[-2:] == ["first part", "second part"]
  # Run again (a resume): appended under its own command line.
  step.total = 2
  assert step("two parts", "two_parts", [str(go)], "two") == result[0]
  lines = log.read_text().splitlines()
  assert len(lines) == 6
  for header in (lines[0], lines[3]):
    assert re.fullmatch(r"== \d{4}-\d\d-\d\d \d\d:\d\d:\d\d: python -m "
                        r"two_parts \S+", header) and header.endswith(str(go))
  assert lines[1:3] == lines[4:6] == ["first part", "second part"]


def test_sigterm_to_the_driver_reaches_its_steps_and_starts_no_more(
    tmp_path, monkeypatch):
  """The driver's SIGTERM handler passes the signal on to a running step
  (a training then saves its step), whose line says so in the error; a
  step after it does not start."""
  from experiments import compare
  from im2txt_ext.errors import InputError
  (tmp_path / "saves_on_sigterm.py").write_text(
      "import signal, sys, time\n"
      "def stop(number, frame):\n"
      "  print('stopped by SIGTERM at step 3, saved', file=sys.stderr)\n"
      "  sys.exit(143)\n"
      "signal.signal(signal.SIGTERM, stop)\n"
      "print('step 1', flush=True)\n"
      "time.sleep(120)\n")
  monkeypatch.setenv("PYTHONPATH", str(tmp_path))
  monkeypatch.setattr(compare, "CHILDREN", compare.Children())
  step = compare.Step(str(tmp_path / "out"), total=2)
  log = tmp_path / "out" / "logs" / "train.log"
  errors = []

  def train():
    try:
      step("train", "saves_on_sigterm", [], "train")
    except InputError as e:
      errors.append(str(e))

  thread = threading.Thread(target=train)
  thread.start()
  for _ in range(600):  # Until its handler is in place.
    if "step 1" in (log.read_text() if log.exists() else ""):
      break
    time.sleep(0.1)
  compare.CHILDREN.stop(signal.SIGTERM)
  thread.join(timeout=60)
  assert errors == [f"{log}: train: stopped by SIGTERM at step 3, saved "
                    "(full log)"]
  with pytest.raises(InputError, match="evaluate: not started, the "
                     "comparison was stopped by SIGTERM"):
    step("evaluate", "platform", [], "evaluate")
  assert not compare.CHILDREN.processes


def test_ctrl_c_to_the_driver_starts_no_more_steps_and_twice_interrupts():
  """Ctrl-C already reached the steps (their process group): the driver
  passes nothing on, starts nothing more, and a second one interrupts it."""
  from experiments import compare
  from im2txt_ext.errors import InputError
  children = compare.Children()
  sleeper = children.start("train", [sys.executable, "-c",
                                     "import time; time.sleep(60)"])
  try:
    children.stop(signal.SIGINT)
    time.sleep(0.5)
    assert sleeper.poll() is None  # Not signalled again by the driver.
    with pytest.raises(InputError, match="not started, the comparison "
                       "was stopped by SIGINT"):
      children.start("evaluate", [sys.executable, "-c", "pass"])
    with pytest.raises(KeyboardInterrupt):
      children.stop(signal.SIGINT)
  finally:
    sleeper.kill()
    sleeper.wait()


def test_side_by_side_stops_starting_after_a_failure():
  """A failure lets the running tasks finish, starts no more and raises."""
  from experiments.compare import side_by_side
  from im2txt_ext.errors import InputError
  started, finished = [], []

  def fails():
    started.append("fails")
    raise InputError("train x failed: boom")

  def slow():
    started.append("slow")
    time.sleep(0.2)
    finished.append("slow")
  with pytest.raises(InputError, match="train x failed: boom"):
    side_by_side({"fails": ([], fails), "slow": ([], slow),
                  "later": ([], lambda: started.append("later")),
                  "needs": (["fails"], lambda: started.append("needs"))},
                 jobs=2)
  assert sorted(started) == ["fails", "slow"] and finished == ["slow"]


def test_results_file_updates_the_rows_it_measured(tmp_path):
  """A run of some experiments replaces their rows and keeps the others',
  in the suite's order; retrieval and published rows come from the run."""
  from experiments import report
  from experiments.suite import Experiment, Suite
  suite = Suite(name="s", metrics=["BLEU-4"], experiments=[
      Experiment(name=name) for name in ("a", "b", "c")])

  def measured(name, value):
    return {"name": name, "label": name, "kind": "measured",
            "metrics": {"BLEU-4": {"mean": value, "sd": None}},
            "training_seconds": {"mean": 10.0, "sd": 1.0}}
  path = str(tmp_path / "results" / "s.json")
  baseline = {"name": "retrieval", "label": "retrieval", "kind": "retrieval",
              "metrics": {"BLEU-4": None}, "training_seconds": None}
  report.update_results_file(path, suite, [measured("c", 0.3),
                                           measured("a", 0.1), baseline])
  # An --only run's suite holds its experiments; order names them all.
  only_b = Suite(name="s", metrics=["BLEU-4"], experiments=[
      Experiment(name="b")])
  document = report.update_results_file(
      path, only_b, [measured("b", 0.2), measured("a", 0.15)],
      order=["a", "b", "c"])
  assert [(r["name"], r["metrics"]["BLEU-4"]["mean"])
          for r in document["rows"]] == [("a", 0.15), ("b", 0.2), ("c", 0.3)]
  assert json.loads(open(path).read()) == document
  assert report.table(document["metrics"], document["rows"][:1] + [
      baseline]).splitlines() == [
          "| model | BLEU-4 | training s |", "|---|---|---|",
          "| a | 0.150 | 10 ± 1 |", "| retrieval | n/a |  |"]


def test_suite_run_placeholder_must_name_an_earlier_experiment(tmp_path):
  from experiments.suite import Suite
  from im2txt_ext.errors import InputError
  config = tiny_config(tmp_path / "st.json", "show_and_tell")
  suite = write_json(tmp_path / "suite.json", {"experiments": [
      {"name": "scst", "config": config,
       "set": ["train.init_from={run:st}"]},
      {"name": "st", "config": config}]})
  with pytest.raises(InputError, match=r"experiment scst: \{run:st\} must "
                     "name an experiment listed before it"):
    Suite.load(suite)


def test_suite_run_placeholder_must_name_an_experiment_of_the_same_side(
    tmp_path):
  """A row starting from another's runs sees the same grid: soft attention's
  weights fit any grid, so a 7x7 row would otherwise train silently from a
  14x14 one."""
  from experiments.suite import Suite
  from im2txt_ext.errors import InputError
  config = tiny_config(tmp_path / "st.json", "show_and_tell")
  source = {"name": "st", "config": config, "image_size": 448}
  scst = {"name": "scst", "config": config,
          "set": ["train.init_from={run:st}"]}
  with pytest.raises(InputError, match=r"experiment scst: image side 224 px, "
                     r"not that of st \(448 px\), whose runs it starts from"):
    Suite.load(write_json(tmp_path / "suite.json",
                          {"experiments": [source, scst]}))
  same = Suite.load(write_json(tmp_path / "suite.json", {
      "image_size": 448, "experiments": [source, scst]}))
  assert [e.name for e in same.experiments] == ["st", "scst"]


def test_suite_ensemble_names_an_earlier_experiment_and_takes_its_setup(
    tmp_path):
  from experiments.suite import Suite
  from im2txt_ext.errors import InputError
  config = tiny_config(tmp_path / "st.json", "show_and_tell")
  st = {"name": "st", "config": config, "seeds": [0, 1], "image_size": 48,
        "evaluate_set": ["model.dropout=0.0"],
        "decoding": {"length_penalty": 0.7}}
  cases = [
      ([{"name": "all", "ensemble": "st"}, st],
       "experiment all: ensemble must name an experiment listed before it "
       "that trains runs"),
      ([st, {"name": "all", "ensemble": "st", "config": config,
             "seeds": [0]}],
       "experiment all: an ensemble takes config, seeds from st"),
      ([st, {"name": "all", "ensemble": "st"},
        {"name": "all_of_all", "ensemble": "all"}],
       "experiment all_of_all: ensemble must name an experiment listed "
       "before it that trains runs")]
  for experiments, message in cases:
    with pytest.raises(InputError, match=message):
      Suite.load(write_json(tmp_path / "suite.json",
                            {"experiments": experiments}))
  loaded = Suite.load(write_json(tmp_path / "suite.json", {
      "experiments": [st, {"name": "all", "ensemble": "st"}]}))
  ensemble = loaded.experiments[1]
  assert (ensemble.config, ensemble.seeds, ensemble.image_size,
          ensemble.evaluate_set, ensemble.decoding) == (
              config, [0, 1], 48, ["model.dropout=0.0"],
              {"length_penalty": 0.7})
  assert [e.name for e in loaded.trained()] == ["st"]


def test_suite_run_placeholder_needs_the_seeds_it_starts_from(tmp_path):
  from experiments.suite import Suite
  from im2txt_ext.errors import InputError
  config = tiny_config(tmp_path / "st.json", "show_and_tell")
  suite = {"seeds": [0, 1], "experiments": [
      {"name": "st", "config": config, "seeds": [0]},
      {"name": "scst", "config": config, "set": ["train.init_from={run:st}"]}]}
  with pytest.raises(InputError, match=r"experiment scst: seeds \[0, 1\] not "
                     r"all among those of st, whose runs it starts from "
                     r"\(\[0\]\)"):
    Suite.load(write_json(tmp_path / "suite.json", suite))
  suite["experiments"][1]["seeds"] = [0]
  loaded = Suite.load(write_json(tmp_path / "suite.json", suite))
  assert loaded.experiment_seeds() == {"st": [0], "scst": [0]}
  assert loaded.experiment_seeds([2, 3]) == {"st": [2, 3], "scst": [2, 3]}


def test_suite_recipes_come_before_an_experiments_own_overrides(tmp_path):
  from experiments.suite import Suite
  from im2txt_ext.config import ExperimentConfig, apply_overrides
  config = tiny_config(tmp_path / "st.json", "show_and_tell")
  loaded = Suite.load(write_json(tmp_path / "suite.json", {
      "recipes": {"scst": ["train.scst=true", "train.learning_rate=0.0001"],
                  "short": ["train.num_steps=4", "train.init_from={run:st}"]},
      "experiments": [
          {"name": "st", "config": config},
          {"name": "scst", "config": config, "recipes": ["scst", "short"],
           "set": ["train.learning_rate=0.0002"]},
          {"name": "scst_all", "ensemble": "scst"}]}))
  scst = loaded.experiments[1]
  assert (scst.recipes, scst.set) == ([], [
      "train.scst=true", "train.learning_rate=0.0001", "train.num_steps=4",
      "train.init_from={run:st}", "train.learning_rate=0.0002"])
  assert scst.runs_needed() == ["st"]  # A recipe's placeholders count.
  train = apply_overrides(ExperimentConfig.load(config), [
      s for s in scst.set if "{run:" not in s]).train
  assert (train.scst, train.num_steps, train.learning_rate) == (
      True, 4, 0.0002)  # The experiment's own setting wins.
  assert loaded.experiments[0].set == loaded.experiments[2].set == []


@pytest.mark.parametrize("suite, message", [
    ({"experiments": [{"name": "st", "recipes": ["scts"]}]},
     r"experiment st: unknown recipe\(s\) \['scts'\]; the suite's: "
     r"\['scst'\]"),
    ({"recipes": {"scst": "train.scst=true"}, "experiments": [
        {"name": "st"}]},
     r"recipe scst: must be a list of overrides 'a.b=value', got "
     r"'train.scst=true'"),
    ({"recipes": {"scst": ["train.scst"]}, "experiments": [{"name": "st"}]},
     r"recipe scst: must be a list of overrides"),
    ({"experiments": [{"name": "st"}, {"name": "all", "ensemble": "st",
                                       "recipes": ["scst"]}]},
     r"experiment all: an ensemble takes recipes from st"),
])
def test_suite_rejects_bad_recipes(tmp_path, suite, message):
  from experiments.suite import Suite
  from im2txt_ext.errors import InputError
  config = tiny_config(tmp_path / "st.json", "show_and_tell")
  suite.setdefault("recipes", {"scst": ["train.scst=true"]})
  for experiment in suite["experiments"]:
    if "ensemble" not in experiment:
      experiment["config"] = config
  with pytest.raises(InputError, match=message):
    Suite.load(write_json(tmp_path / "suite.json", suite))


def test_a_suite_takes_the_recipes_of_its_recipes_file_too(tmp_path):
  from experiments.suite import Suite
  config = tiny_config(tmp_path / "st.json", "show_and_tell")
  shared = write_json(tmp_path / "recipes.json", {
      "scst": ["train.scst=true", "train.num_steps=4"]})
  suite = {"recipes_file": shared,
           "recipes": {"short": ["train.num_steps=2"]},
           "experiments": [{"name": "st", "config": config},
                           {"name": "scst", "config": config,
                            "recipes": ["scst", "short"]}]}
  loaded = Suite.load(write_json(tmp_path / "suite.json", suite))
  assert loaded.experiments[1].set == [
      "train.scst=true", "train.num_steps=4", "train.num_steps=2"]
  # Two suites naming one file run the same recipe.
  other = Suite.load(write_json(tmp_path / "other.json", {
      **suite, "recipes": {}, "experiments": [
          {"name": "scst", "config": config, "recipes": ["scst"]}]}))
  assert other.experiments[0].set == loaded.experiments[1].set[:2]


@pytest.mark.parametrize("text, message", [
    (None, r"missing.json: recipes file not found"),
    ('{"scst": ["train.scst=true"],}',
     r"recipes.json:1: malformed JSON \(Expecting property name"),
    ('{"scst": "train.scst=true"}',
     r"recipes.json: recipe scst: must be a list of overrides"),
    ('["train.scst=true"]', r"recipes.json: recipes must be an object of "
                            r"name -> list of overrides, got list"),
    ('{"short": ["train.num_steps=4"]}',
     r"suite.json: recipe\(s\) \['short'\] both in the suite and in its "
     r"recipes_file"),
])
def test_suite_rejects_a_bad_recipes_file(tmp_path, text, message):
  from experiments.suite import Suite
  from im2txt_ext.errors import InputError
  path = tmp_path / ("missing.json" if text is None else "recipes.json")
  if text is not None:
    path.write_text(text)
  config = tiny_config(tmp_path / "st.json", "show_and_tell")
  with pytest.raises(InputError, match=message):
    Suite.load(write_json(tmp_path / "suite.json", {
        "recipes_file": str(path), "recipes": {"short": ["train.num_steps=2"]},
        "experiments": [{"name": "st", "config": config}]}))


@pytest.mark.parametrize("name", [
    path.name for path in sorted((REPO / "experiments/suites").glob("*.json"))
    if isinstance(json.loads(path.read_text()), dict)])  # Not decodings.
def test_the_repositorys_suites_load_and_their_overrides_apply(name,
                                                               monkeypatch):
  from experiments.suite import Suite
  from im2txt_ext.config import ExperimentConfig, apply_overrides
  monkeypatch.chdir(REPO)
  suite = Suite.load(f"experiments/suites/{name}")
  for experiment in suite.trained():
    settings = [re.sub(r"\{[^}]*\}", "runs/x", s) for s in experiment.set]
    values = apply_overrides(ExperimentConfig.load(experiment.config),
                             settings).to_dict()
    for key, raw in dict(s.split("=", 1) for s in settings).items():
      *sections, leaf = key.split(".")
      target = values
      for section in sections:
        target = target[section]
      try:
        expected = json.loads(raw)
      except json.JSONDecodeError:
        expected = raw
      assert target[leaf] == expected, (experiment.name, key)


@pytest.mark.parametrize("options, message", [
    ({"length_penalty": 0.7, "beam_width": 5},
     r"experiment st: decoding: beam_width: not an option of the beam "
     r"search \(it takes method, beam_size, min_length, "),
    ({"top_p": 0.9}, r"decoding: top_p: not an option of the beam search"),
    ({"length_penalty": "0.7"},
     r"experiment st: decoding length_penalty must be of type float, got "
     r"'0.7'"),
    ({"no_repeat_ngram_size": 2.5},
     r"decoding no_repeat_ngram_size must be of type int, got 2.5"),
    ({"no_bad_endings": 1},
     r"decoding no_bad_endings must be of type bool, got 1"),
    ({"beam_size": 0}, r"decoding beam_size must be a positive int, got 0"),
    ({"beam_size": 2.0},
     r"decoding beam_size must be a positive int, got 2.0"),
    ({"method": "sample"},
     r"experiment st: decoding method must be beam or greedy, got 'sample'"),
    ({"method": "greedy", "beam_size": 5},
     r"decoding: beam_size: not an option of the greedy search")])
def test_suite_rejects_bad_decoding_options_before_training(tmp_path,
                                                            options, message):
  from experiments.suite import Suite
  from im2txt_ext.errors import InputError
  suite = write_json(tmp_path / "suite.json", {"experiments": [
      {"name": "st", "config": tiny_config(tmp_path / "st.json",
                                           "show_and_tell"),
       "decoding": options}]})
  with pytest.raises(InputError, match=message):
    Suite.load(suite)
  with pytest.raises(InputError, match=re.escape(str(suite))):
    Suite.load(suite)


def test_suite_rejects_an_unknown_metric(tmp_path):
  from experiments.suite import Suite
  from im2txt_ext.errors import InputError
  suite = write_json(tmp_path / "suite.json", {
      "experiments": [{"name": "st", "config": tiny_config(
          tmp_path / "st.json", "show_and_tell")}],
      "published": [{"label": "paper", "metrics": {"BLEU-5": 0.1}}]})
  with pytest.raises(InputError, match=r"unknown metric\(s\) \['BLEU-5'\]"):
    Suite.load(suite)


def test_suite_rejects_curves_of_an_unknown_experiment(tmp_path):
  from experiments.suite import Suite
  from im2txt_ext.errors import InputError
  suite = write_json(tmp_path / "suite.json", {
      "experiments": [{"name": "st", "config": tiny_config(
          tmp_path / "st.json", "show_and_tell")}],
      "curves": ["st", "sat"]})
  with pytest.raises(InputError, match=r"curves names unknown experiments "
                     r"\['sat'\]"):
    Suite.load(suite)


def test_compare_names_a_missing_data_path(tmp_path):
  env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="2")
  result = subprocess.run(
      [sys.executable, "-m", "experiments.compare",
       "--suite=experiments/suites/scenes.json", f"--data={tmp_path}",
       f"--output={tmp_path / 'out'}"],
      capture_output=True, text=True, cwd=str(REPO), env=env, timeout=120)
  assert result.returncode == 2
  assert result.stderr.strip().splitlines()[-1] == (
      f"error: {tmp_path / 'captions_train.json'}: train_captions of suite "
      "'scenes' not found")


def test_rows_trained_on_the_images_need_no_cached_features(tmp_path):
  """A row that fine-tunes the CNN at its own side (and an ensemble of its
  runs) reads the images, so no features are extracted at that side; the
  suite's pooled ones are, for retrieval."""
  from experiments.compare import feature_files
  from experiments.suite import Suite
  soft = tiny_config(tmp_path / "soft.json", "soft_attention")
  suite = Suite.load(write_json(tmp_path / "suite.json", {
      "encoder": "scene_cnn", "experiments": [
          {"name": "soft", "config": soft, "image_size": 48},
          {"name": "soft_cnn", "config": soft, "image_size": 64,
           "set": ["train.init_from=elsewhere", "data.features="]},
          {"name": "soft_cnn_ensemble", "ensemble": "soft_cnn"}]}))
  features, reads = feature_files(suite, str(tmp_path))
  assert list(features) == [("spatial", 48), ("pooled", 0)]
  assert features["spatial", 48].endswith("scene_cnn_48px_spatial.npy")
  assert reads["soft_cnn"] == reads["soft_cnn_ensemble"] == ("spatial", 64)
  suite.experiments = suite.experiments[1:]  # --only=soft_cnn,...
  assert list(feature_files(suite, str(tmp_path))[0]) == [("pooled", 0)]


def test_compare_refuses_features_or_runs_at_another_image_size(tmp_path):
  """A cached features file or an earlier run at another image side is
  never taken for one at the side the suite asks (e.g. after a suite moves
  an experiment to a larger grid): one line naming it."""
  from experiments.compare import check_run_image_size, features_complete
  from im2txt_ext.errors import InputError
  features = tmp_path / "scene_cnn_pooled.npy"
  np.save(features, np.zeros((1, 128), np.float16))
  write_json(tmp_path / "scene_cnn_pooled.json", {
      "encoder": "scene_cnn", "image_size": 32, "kind": "pooled",
      "shape": [1, 128], "image_ids": ["a.jpg"], "rows_done": 1})
  assert features_complete(str(features), "scene_cnn", 32)
  for size, asked in ((48, 48), (0, 64)):  # 0: the encoder's default.
    with pytest.raises(InputError, match=re.escape(
        f"{features}: features of scene_cnn at 32 px, but the suite asks "
        f"scene_cnn at {asked} px: move the file away")):
      features_complete(str(features), "scene_cnn", size)
  run = tmp_path / "runs" / "soft-seed0"
  check_run_image_size(str(run), "scene_cnn", 48)  # None yet: nothing to do.
  run.mkdir(parents=True)
  write_json(run / "config.json", {"data": {"image_size": 32}})
  check_run_image_size(str(run), "scene_cnn", 32)
  with pytest.raises(InputError, match=re.escape(
      f"{run}: trained at 32 px, but the suite asks 48 px: move the run "
      "away")):
    check_run_image_size(str(run), "scene_cnn", 48)


def test_an_ensemble_of_runs_at_another_side_is_refused(scene_data,
                                                        tmp_path):
  """``--only=ENSEMBLE``: its members' runs are checked, before any step,
  against the side its features will be extracted at."""
  from experiments.compare import compare
  from experiments.suite import Suite
  from im2txt_ext.errors import InputError
  root, _ = scene_data
  suite = Suite.load(write_json(tmp_path / "suite.json", {
      "train_captions": "captions_train.json",
      "val_captions": "captions_val.json",
      "test_captions": "captions_test.json", "encoder": "scene_cnn",
      "experiments": [
          {"name": "soft", "image_size": 48,
           "config": tiny_config(tmp_path / "soft.json", "soft_attention")},
          {"name": "soft_ensemble", "ensemble": "soft"}]}))
  suite.experiments = suite.experiments[1:]  # As --only=soft_ensemble.
  member = tmp_path / "results" / "runs" / "soft-seed0"
  member.mkdir(parents=True)
  write_json(member / "config.json", {"data": {"image_size": 32},
                                      "model": {"encoder": "scene_cnn"}})
  with pytest.raises(InputError, match=re.escape(
      f"{member}: trained at 32 px, but the suite asks 48 px")):
    compare(suite, str(root), str(tmp_path / "results"), meteor=False)
  assert sorted(os.listdir(tmp_path / "results")) == ["runs"]
