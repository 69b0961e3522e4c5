"""The command-line tools as a user runs them: real processes, one-line
errors with exit status 2, help for every flag."""

import ast
import importlib.util
import json
import os
import pathlib
import re
import subprocess
import sys

import pytest

from conftest import REPO, REPORTS_TENSORFLOW, console_scripts


def _run(module, *args, timeout=300):
  env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="2")
  return subprocess.run([sys.executable, "-m", module, *args], env=env,
                        capture_output=True, text=True, timeout=timeout,
                        cwd=str(REPO))


def _assert_one_line_error(result, *fragments):
  assert result.returncode == 2, result.stderr[-3000:]
  lines = [l for l in result.stderr.strip().splitlines()
           if l.startswith("error: ")]
  assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
  for fragment in fragments:
    assert fragment in lines[0]


@pytest.fixture(scope="module")
def trained_run(scene_data, tmp_path_factory):
  root, paths = scene_data
  run_dir = tmp_path_factory.mktemp("cli") / "run"
  result = _run(
      "im2txt_ext.cli.train", f"--run_dir={run_dir}", "--quiet",
      f"--set=data.train_captions={paths['train']}",
      f"--set=data.val_captions={paths['val']}",
      f"--set=data.images_dir={root / 'images'}", "--set=data.image_size=32",
      "--set=model.hidden_size=16", "--set=model.embedding_size=8",
      "--set=train.num_steps=3", "--set=train.checkpoint_every=3",
      "--set=train.validate_every=3", "--set=train.train_encoder_after=0")
  assert result.returncode == 0, result.stderr[-3000:]
  assert json.loads(result.stdout.strip().splitlines()[-1])["steps"] == 3
  # --quiet (as the comparison driver trains): no progress bar, but a line
  # a validation for the run's log.
  assert re.search(r"^step 3/3: validation BLEU-4 \d\.\d{4}, CIDEr-D "
                   r"\d\.\d{4} \(\d+ s\)$", result.stdout, re.M), \
      result.stdout
  assert "%|" not in result.stderr  # tqdm's bar.
  return run_dir, root


def test_caption_command(trained_run, tmp_path):
  run_dir, root = trained_run
  output = tmp_path / "captions.jsonl"
  result = _run("im2txt_ext.cli.caption", f"--run_dir={run_dir}",
                f"--images={root / 'images' / 'scene_000000.png'},"
                f"{root / 'images' / 'scene_000001.png'}",
                "--beam_size=2", "--top_k=2", f"--output={output}")
  assert result.returncode == 0, result.stderr[-3000:]
  assert len(result.stdout.strip().splitlines()) == 4  # 2 images x top 2.
  lines = [json.loads(l) for l in output.read_text().splitlines()]
  assert [len(l["captions"]) for l in lines] == [2, 2]
  assert lines[0]["image"].endswith("scene_000000.png")


def test_caption_bad_inputs(trained_run, tmp_path):
  run_dir, root = trained_run
  image = str(root / "images" / "scene_000000.png")
  _assert_one_line_error(
      _run("im2txt_ext.cli.caption", f"--run_dir={tmp_path / 'nope'}",
           f"--images={image}"), "run directory not found", "nope")
  not_image = tmp_path / "photo.jpg"
  not_image.write_text("hello")
  _assert_one_line_error(
      _run("im2txt_ext.cli.caption", f"--run_dir={run_dir}",
           f"--images={not_image}"), "photo.jpg", "corrupt or truncated")
  # The search's size checks (each tested in test_search and test_api), in
  # one line here too.
  _assert_one_line_error(
      _run("im2txt_ext.cli.caption", f"--run_dir={run_dir}",
           f"--images={image}", "--beam_size=500"),
      "beam size must be a positive integer up to", "the words the search "
      "may emit, got 500")
  _assert_one_line_error(
      _run("im2txt_ext.cli.caption", f"--run_dir={run_dir}",
           f"--images={image}", f"--output={tmp_path / 'no' / 'c.jsonl'}"),
      "no such folder to write into", "c.jsonl")
  # Flags absl itself refuses: the same one line and status.
  _assert_one_line_error(_run("im2txt_ext.cli.caption"),
                         "--run_dir must have a value", "--images")
  _assert_one_line_error(
      _run("im2txt_ext.cli.caption", f"--run_dir={run_dir}",
           f"--images={image}", "--batch_size=0"),
      "--batch_size=0: 0 is not a positive integer")
  _assert_one_line_error(
      _run("im2txt_ext.cli.caption", f"--run_dir={run_dir}",
           f"--images={image}", "--method=sample", "--temperature=0"),
      "--temperature must be above 0")


def test_paths_and_options_that_cannot_be_used(trained_run, scene_data,
                                               tmp_path):
  run_dir, _ = trained_run
  _, paths = scene_data
  a_file = tmp_path / "a_file"
  a_file.write_text("not a folder")
  _assert_one_line_error(
      _run("im2txt_ext.cli.train", f"--run_dir={a_file}"),
      "a_file: a file is in the way of a folder there")
  _assert_one_line_error(
      _run("im2txt_ext.serve", f"--export={run_dir}"),
      "not an exported model", str(run_dir))
  _assert_one_line_error(
      _run("im2txt_ext.cli.evaluate", f"--run_dir={run_dir}",
           f"--captions={paths['test']}", "--split=bogus"),
      "no images of split 'bogus'")
  _assert_one_line_error(
      _run("im2txt_ext.cli.evaluate", f"--run_dir={run_dir}",
           f"--captions={paths['test']}", f"--features={a_file}.npy"),
      "trained from images", "evaluate it without --features")
  _assert_one_line_error(
      _run("im2txt_ext.cli.scenes", f"--output_dir={tmp_path / 's'}",
           "--image_size=8"), "--image_size=8: 8 is not integer >= 16")


def test_evaluate_export_needs_the_images_folder(scene_data, tmp_path):
  """Caption files name images relative to a folder; an export has no
  config that says which, so the error says to give it (before the export
  is even loaded)."""
  _, paths = scene_data
  _assert_one_line_error(
      _run("im2txt_ext.cli.evaluate", f"--export={tmp_path / 'model'}",
           f"--captions={paths['test']}"),
      "not found: give --images_dir", paths["test"])


def test_evaluate_command(trained_run, scene_data, tmp_path):
  run_dir, _ = trained_run
  _, paths = scene_data
  result = _run("im2txt_ext.cli.evaluate", f"--run_dir={run_dir}",
                f"--captions={paths['test']}", "--meteor=false",
                f"--output_dir={tmp_path}")
  assert result.returncode == 0, result.stderr[-3000:]
  metrics = json.loads((tmp_path / "metrics.json").read_text())
  assert metrics["images"] == 16 and 0 <= metrics["BLEU-4"] <= 1
  # Perplexity of the references: above 1, below uniform over the words.
  vocab_size = len((run_dir / "vocab.txt").read_text().splitlines())
  assert 1.0 < metrics["perplexity"] < vocab_size + 1
  per_image = json.loads((tmp_path / "captions.json").read_text())
  assert len(per_image) == 16 and len(per_image[0]["references"]) == 5
  # Batches of 3 (the last of 1) give the same captions and perplexity.
  batched = tmp_path / "batched"
  result = _run("im2txt_ext.cli.evaluate", f"--run_dir={run_dir}",
                f"--captions={paths['test']}", "--meteor=false",
                "--batch_size=3", f"--output_dir={batched}")
  assert result.returncode == 0, result.stderr[-3000:]
  assert json.loads((batched / "captions.json").read_text()) == per_image
  assert json.loads((batched / "metrics.json").read_text())[
      "perplexity"] == pytest.approx(metrics["perplexity"], rel=1e-5)


def test_setup_declares_the_console_scripts():
  assert len(console_scripts()) >= 14


@pytest.mark.parametrize("command, module, function", [
    (command, module, function)
    for command, (module, function) in console_scripts().items()])
def test_console_script_help_shows_its_usage_and_flags(command, module,
                                                       function):
  """--help as an installed console script runs it: its __main__ is a stub
  that imports the command's module, where the docstring and flags are.
  It imports no TensorFlow (seconds of start-up for a help text)."""
  stub = (f"{REPORTS_TENSORFLOW}sys.argv[0] = {command!r}; "
          f"from {module} import {function}; sys.exit({function}())")
  env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="2")
  result = subprocess.run([sys.executable, "-c", stub, "--help"], env=env,
                          capture_output=True, text=True, timeout=120,
                          cwd=str(REPO))
  assert "Traceback" not in result.stderr, result.stderr[-3000:]
  assert "TensorFlow imported" not in result.stderr
  # The docstring read from the source, without importing TensorFlow here.
  source = pathlib.Path(importlib.util.find_spec(module).origin).read_text()
  summary = ast.get_docstring(ast.parse(source)).splitlines()[0]
  assert result.stdout.startswith(summary), result.stdout[:500]
  shown = re.findall(r"^  --(?:\[no\])?(\w+):", result.stdout, re.M)
  assert shown, result.stdout
  assert not {"logtostderr", "verbosity"} & set(shown)  # absl's own.
  if command == "im2txt-caption":
    assert {"run_dir", "images", "beam_size", "method"} <= set(shown)


def test_every_command_module_imports_in_one_process():
  """A command defines its flags when it runs, not on import, so that a
  program or notebook can import several (their flag names overlap:
  --run_dir, --output, --captions, ...)."""
  modules = sorted({module for module, _ in console_scripts().values()} |
                   {"experiments.decoding"})
  code = ("import importlib, sys\n"
          "for module in sys.argv[1:]:\n"
          "  importlib.import_module(module)\n"
          "print('imported', len(sys.argv) - 1)")
  env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="2")
  result = subprocess.run([sys.executable, "-c", code, *modules], env=env,
                          capture_output=True, text=True, timeout=300,
                          cwd=str(REPO))
  assert result.returncode == 0, result.stderr[-3000:]
  assert result.stdout.split() == ["imported", str(len(modules))]


@pytest.mark.parametrize("module", ["im2txt_ext.cli.train",
                                    "im2txt_ext.cli.caption"])
def test_help_explains_every_flag(module):
  result = _run(module, "--helpfull")
  assert "Traceback" not in result.stderr
  for flag in (("--run_dir", "--config", "--set") if module.endswith("train")
               else ("--run_dir", "--images", "--beam_size", "--method")):
    line = next(l for l in result.stdout.splitlines()
                if l.strip().startswith(flag + ":"))
    assert len(line.split(":", 1)[1].strip()) > 10  # A real help text.
