"""The exported SavedModel: the library's captions from TensorFlow alone,
every decoder, the stock saved_model_cli, clear errors, atomic writes."""

import json
import os
import re
import shutil
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest
import tensorflow as tf

from conftest import REPO
from im2txt_ext import export
from im2txt_ext.errors import InputError

BEAM, LENGTH, TOP_K = 3, 12, 2


def run_module(module, *args, timeout=300):
  env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="2")
  return subprocess.run([sys.executable, "-m", module, *args], env=env,
                        capture_output=True, text=True, timeout=timeout,
                        cwd=str(REPO))


def tiny_overrides(scene_data, decoder="show_and_tell", steps=3):
  """--set values of a tiny model trained end to end on the scenes."""
  root, paths = scene_data
  return [f"data.train_captions={paths['train']}",
          f"data.val_captions={paths['val']}",
          f"data.images_dir={root / 'images'}", "data.image_size=32",
          f"model.decoder={decoder}", "model.hidden_size=16",
          "model.embedding_size=8", f"train.num_steps={steps}",
          f"train.checkpoint_every={steps}", f"train.validate_every={steps}",
          "train.train_encoder_after=0",
          # One block: test_transformer checks the stack.
          *(["model.decoder_options.num_layers=1"]
            if decoder == "transformer" else [])]


def train_tiny(scene_data, run_dir, decoder="show_and_tell"):
  """Trains a tiny model for one step in this process; returns run_dir."""
  from im2txt_ext.config import ExperimentConfig, apply_overrides
  from im2txt_ext.training.trainer import Trainer
  config = apply_overrides(ExperimentConfig(),
                           tiny_overrides(scene_data, decoder, steps=1))
  Trainer(config, str(run_dir), quiet=True).train()
  return run_dir


def image_paths(scene_data, count=4):
  root, _ = scene_data
  return [str(root / "images" / f"scene_{i:06d}.png") for i in range(count)]


def png_header(width, height):
  """A PNG that claims width x height, with no pixel data (never decoded)."""
  def chunk(kind, data=b""):
    return (struct.pack(">I", len(data)) + kind + data +
            struct.pack(">I", zlib.crc32(kind + data)))
  return (b"\x89PNG\r\n\x1a\n" +
          chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
          + chunk(b"IDAT") + chunk(b"IEND"))


@pytest.fixture(scope="session")
def exported(scene_data, tmp_path_factory):
  """(run dir, export dir) of a tiny Show and Tell, trained and exported by
  the command-line tools (beam BEAM, LENGTH words, TOP_K captions); shared
  with the other test files that need one (test_api)."""
  folder = tmp_path_factory.mktemp("export")
  run_dir = folder / "run"
  result = run_module("im2txt_ext.cli.train", f"--run_dir={run_dir}",
                      "--quiet", *(f"--set={value}" for value in
                                   tiny_overrides(scene_data)))
  assert result.returncode == 0, result.stderr[-3000:]
  result = run_module("im2txt_ext.cli.export", f"--run_dir={run_dir}",
                      f"--output={folder / 'model'}", f"--beam_size={BEAM}",
                      f"--max_length={LENGTH}", f"--top_k={TOP_K}")
  assert result.returncode == 0, result.stderr[-3000:]
  assert "caption_with_options(images, beam_size, max_length, k, " \
      "length_penalty, min_length, no_bad_endings, no_repeat_ngram_size, " \
      "repetition_penalty, diversity_groups, diversity_strength)" in \
      result.stdout
  return run_dir, folder / "model"


@pytest.fixture(scope="session")
def soft_attention_export(scene_data, tmp_path_factory):
  """(run dir, export dir) of a tiny soft-attention model (beam 2, 8 words,
  2 captions), shared by the test files that need attention (test_serve,
  test_api)."""
  folder = tmp_path_factory.mktemp("soft_attention_export")
  run_dir = train_tiny(scene_data, folder / "run", "soft_attention")
  export.export(str(run_dir), str(folder / "model"), beam_size=2,
                max_length=8, top_k=2)
  return run_dir, folder / "model"


# Run with `python -I`: no repository or site path tricks, and the check that
# the library never got imported.
FRESH_PYTHON = """
import json, sys
import tensorflow as tf
model = tf.saved_model.load(sys.argv[1])
images = tf.constant([open(p, "rb").read() for p in sys.argv[2:]])
default = model.signatures["serving_default"](images=images)
options = model.signatures["caption_with_options"](
    images=images, beam_size=tf.constant(4), max_length=tf.constant(5),
    k=tf.constant(4), length_penalty=tf.constant(0.5),
    min_length=tf.constant(2), no_bad_endings=tf.constant(True),
    no_repeat_ngram_size=tf.constant(2),
    repetition_penalty=tf.constant(1.2), diversity_groups=tf.constant(2),
    diversity_strength=tf.constant(0.5))
print(json.dumps({
    "captions": default["captions"].numpy().astype(str).tolist(),
    "log_probs": default["log_probs"].numpy().tolist(),
    "options_captions": options["captions"].numpy().astype(str).tolist(),
    "library_imported": any(m.startswith("im2txt_ext") for m in sys.modules),
}))
"""


def test_export_captions_like_the_library_in_a_fresh_python(
    exported, scene_data, tmp_path):
  from im2txt_ext.inference import Captioner
  run_dir, model_dir = exported
  paths = image_paths(scene_data)
  result = subprocess.run(
      [sys.executable, "-I", "-c", FRESH_PYTHON, str(model_dir), *paths],
      capture_output=True, text=True, timeout=120, cwd=str(tmp_path),
      env={"PATH": os.environ["PATH"], "TF_CPP_MIN_LOG_LEVEL": "2"})
  assert result.returncode == 0, result.stderr[-3000:]
  served = json.loads(result.stdout.strip().splitlines()[-1])
  assert not served["library_imported"]

  captioner = Captioner(str(run_dir))
  expected = captioner.caption_files(paths, beam_size=BEAM,
                                     max_length=LENGTH, top_k=TOP_K)
  assert served["captions"] == [[o["caption"] for o in e["captions"]]
                                for e in expected]
  np.testing.assert_allclose(
      served["log_probs"],
      [[o["log_prob"] for o in e["captions"]] for e in expected], rtol=1e-4)
  with_options = captioner.caption_files(
      paths, beam_size=4, max_length=5, top_k=4, length_penalty=0.5,
      min_length=2, no_bad_endings=True, no_repeat_ngram_size=2,
      repetition_penalty=1.2, diversity_groups=2, diversity_strength=0.5)
  assert served["options_captions"] == [
      [o["caption"] for o in e["captions"]] for e in with_options]

  # caption_features: the same search from the library's own features.
  model = tf.saved_model.load(str(model_dir))
  features = captioner.encode_images(captioner.load_images(paths))
  out = model.signatures["caption_features"](features=features)
  assert out["captions"].numpy().astype(str).tolist() == served["captions"]


@pytest.mark.skipif(shutil.which("saved_model_cli") is None,
                    reason="saved_model_cli is not on PATH")
def test_stock_saved_model_cli(exported, scene_data, tmp_path):
  _, model_dir = exported
  show = subprocess.run(["saved_model_cli", "show", "--dir", str(model_dir),
                         "--all"], capture_output=True, text=True,
                        timeout=120)
  assert show.returncode == 0, show.stderr[-3000:]
  for name in ("serving_default", "caption_with_options", "caption_features",
               "captions", "log_probs"):
    assert name in show.stdout
  # Fixed-width bytes keep the file free of pickles (PNGs end in no NUL).
  with open(image_paths(scene_data, 1)[0], "rb") as f:
    np.save(tmp_path / "images.npy", np.array([f.read()]))
  run = subprocess.run(
      ["saved_model_cli", "run", "--dir", str(model_dir), "--tag_set",
       "serve", "--signature_def", "serving_default", "--inputs",
       f"images={tmp_path / 'images.npy'}"],
      capture_output=True, text=True, timeout=120)
  assert run.returncode == 0, run.stderr[-3000:]
  assert "Result for output key captions" in run.stdout


@pytest.mark.parametrize("decoder", ["rnn_baseline", "soft_attention",
                                     "hard_attention", "transformer"])
def test_every_decoder_exports(decoder, scene_data, tmp_path):
  from im2txt_ext.inference import Captioner
  run_dir = train_tiny(scene_data, tmp_path / "run", decoder)
  export.export(str(run_dir), str(tmp_path / "model"), beam_size=2,
                max_length=6, top_k=2, xla=decoder == "soft_attention")
  model = tf.saved_model.load(str(tmp_path / "model"))
  paths = image_paths(scene_data, 3)
  images = tf.constant([open(p, "rb").read() for p in paths])
  out = model.signatures["serving_default"](images=images)
  assert out["captions"].shape == out["log_probs"].shape == [3, 2]
  expected = Captioner(str(run_dir)).caption_files(
      paths, beam_size=2, max_length=6, top_k=2)
  assert out["captions"].numpy().astype(str).tolist() == [
      [o["caption"] for o in e["captions"]] for e in expected]
  if decoder == "rnn_baseline":
    assert "attention" not in out
  else:  # [N, K, T, L]: a 4x4 map at 32 px.
    assert out["attention"].shape == [3, 2, 6, 16]
    words = len(out["captions"][0, 0].numpy().split())
    np.testing.assert_allclose(
        tf.reduce_sum(out["attention"][0, 0, :words], -1), 1.0, rtol=1e-4)


def test_xla_export_captions_like_the_plain_one(exported, scene_data,
                                               tmp_path):
  run_dir, model_dir = exported
  export.export(str(run_dir), str(tmp_path / "xla"), beam_size=BEAM,
                max_length=LENGTH, top_k=TOP_K, xla=True)
  plain = tf.saved_model.load(str(model_dir)).signatures["serving_default"]
  xla = tf.saved_model.load(str(tmp_path / "xla"))
  images = tf.constant([open(p, "rb").read() for p in image_paths(scene_data)])
  want, got = plain(images=images), xla.signatures["serving_default"](
      images=images)
  assert got["captions"].numpy().tolist() == want["captions"].numpy().tolist()
  np.testing.assert_allclose(got["log_probs"], want["log_probs"], rtol=1e-4)
  empty = xla.signatures["serving_default"](images=tf.constant([], tf.string))
  assert empty["captions"].shape == [0, TOP_K]


@pytest.fixture(scope="module")
def loaded(exported):
  return tf.saved_model.load(str(exported[1]))


def test_bad_images_give_clear_errors(loaded, scene_data):
  good = open(image_paths(scene_data, 1)[0], "rb").read()
  serve = loaded.signatures["serving_default"]
  cases = [
      ([good, b"hello, not an image"], "image 1 is not a JPEG/PNG/GIF/BMP"),
      ([b""], "image 0 is not a JPEG/PNG/GIF/BMP"),
      ([png_header(20000, 20000)],
       "image 0 has 20000x20000 pixels, more than the 40000000 allowed"),
      ([b"GIF89a" + struct.pack("<HH", 9000, 9000) + b"\0" * 8],
       "image 0 has 9000x9000 pixels"),
  ]
  for images, message in cases:
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
      serve(images=tf.constant(images))
  # The process lives on and still captions.
  assert serve(images=tf.constant([good]))["captions"].shape == [1, TOP_K]


def test_empty_batch_and_bad_options(loaded):
  empty = tf.constant([], tf.string)
  out = loaded.signatures["serving_default"](images=empty)
  assert out["captions"].shape == out["log_probs"].shape == [0, TOP_K]
  out = loaded.signatures["caption_features"](features=tf.zeros([0, 128]))
  assert out["captions"].shape == [0, TOP_K]
  options = loaded.signatures["caption_with_options"]
  for (beam, length, k), message in [
      ((2, 5, 3), "assertion failed: \\[k must be in 1..2, got 3"),
      ((0, 5, 1), "beam size must be a positive integer up to 20, the "
       "words the search may emit, got 0"),
      ((21, 5, 1), "up to 20, the words the search may emit, got 21"),
      ((2, 501, 1), "max length must be in 1..500, got 501")]:
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
      options(images=empty, beam_size=tf.constant(beam),
              max_length=tf.constant(length), k=tf.constant(k),
              length_penalty=tf.constant(0.0), min_length=tf.constant(0),
              no_bad_endings=tf.constant(False),
              no_repeat_ngram_size=tf.constant(0),
              repetition_penalty=tf.constant(1.0),
              diversity_groups=tf.constant(1),
              diversity_strength=tf.constant(0.0))


def test_interrupted_export_keeps_the_old_one(exported, tmp_path,
                                              monkeypatch):
  run_dir, model_dir = exported
  target = tmp_path / "model"
  shutil.copytree(model_dir, target)
  before = {p.name: p.read_bytes() for p in target.rglob("*") if p.is_file()}

  def failing_save(obj, folder, **kwargs):
    del obj, kwargs
    with open(os.path.join(folder, "saved_model.pb"), "wb") as f:
      f.write(b"half a model")
    raise RuntimeError("disk full")
  monkeypatch.setattr(tf.saved_model, "save", failing_save)
  with pytest.raises(RuntimeError, match="disk full"):
    export.export(str(run_dir), str(target))
  after = {p.name: p.read_bytes() for p in target.rglob("*") if p.is_file()}
  assert after == before
  assert sorted(os.listdir(tmp_path)) == ["model"]  # No temporary folder.

  monkeypatch.undo()
  export.export(str(run_dir), str(target), beam_size=2, top_k=1)
  assert sorted(os.listdir(tmp_path)) == ["model"]
  out = tf.saved_model.load(str(target)).signatures["serving_default"](
      images=tf.constant([], tf.string))
  assert out["captions"].shape == [0, 1]  # The new export.


def test_export_refuses_to_replace_other_folders(exported, tmp_path):
  run_dir, _ = exported
  (tmp_path / "notes").mkdir()
  (tmp_path / "notes" / "keep.txt").write_text("mine")
  with pytest.raises(InputError, match="not a SavedModel"):
    export.export(str(run_dir), str(tmp_path / "notes"))
  assert (tmp_path / "notes" / "keep.txt").read_text() == "mine"


def test_export_command_error_is_one_line(exported, tmp_path):
  run_dir, _ = exported
  result = run_module("im2txt_ext.cli.export", f"--run_dir={run_dir}",
                      "--beam_size=2", "--top_k=3",
                      f"--output={tmp_path / 'model'}")
  assert result.returncode == 2, result.stderr[-3000:]
  assert "error: top_k must be in 1..2, got 3" in result.stderr
  assert "Traceback" not in result.stderr
  assert not (tmp_path / "model").exists()


def test_evaluate_an_export_like_its_checkpoint(exported, scene_data,
                                                 tmp_path):
  """im2txt-evaluate --export scores the same captions as --run_dir."""
  run_dir, model_dir = exported
  root, paths = scene_data
  captions = {}
  for source in (f"--run_dir={run_dir}", f"--export={model_dir}"):
    out = tmp_path / source.split("=")[0].strip("-")
    result = run_module("im2txt_ext.cli.evaluate", source,
                        f"--captions={paths['test']}", "--meteor=false",
                        f"--images_dir={root / 'images'}",
                        f"--beam_size={BEAM}", f"--max_length={LENGTH}",
                        f"--output_dir={out}")
    assert result.returncode == 0, result.stderr[-3000:]
    captions[source[:5]] = json.loads((out / "captions.json").read_text())
  assert captions["--run"] == captions["--exp"]
  metrics = json.loads((tmp_path / "run_dir" / "metrics.json").read_text())
  assert metrics["perplexity"] > 1.0


def test_caption_command_takes_the_decoding_options(exported, scene_data):
  from im2txt_ext.inference import Captioner
  run_dir, _ = exported
  paths = image_paths(scene_data, 2)
  result = run_module("im2txt_ext.cli.caption", f"--run_dir={run_dir}",
                      f"--images={','.join(paths)}", "--beam_size=4",
                      "--top_k=4", "--diversity_groups=2",
                      "--diversity_strength=1.0", "--min_length=2",
                      "--no_repeat_ngram_size=2", "--no_bad_endings")
  assert result.returncode == 0, result.stderr[-3000:]
  lines = [line.split("\t") for line in result.stdout.strip().splitlines()]
  assert len(lines) == 8
  expected = Captioner(str(run_dir)).caption_files(
      paths, beam_size=4, top_k=4, diversity_groups=2, diversity_strength=1.0,
      min_length=2, no_repeat_ngram_size=2, no_bad_endings=True)
  assert [line[1] for line in lines] == [
      o["caption"] for e in expected for o in e["captions"]]
  for image in range(2):
    captions = [line[1] for line in lines[4 * image:4 * image + 4]]
    assert len(set(captions)) == 4
    assert all(len(c.split()) >= 2 for c in captions)
  with pytest.raises(InputError, match="top_p: not an option of the beam"):
    Captioner(str(run_dir)).caption_files(paths, top_p=0.9)
  bad = run_module("im2txt_ext.cli.caption", f"--run_dir={run_dir}",
                   f"--images={paths[0]}", "--beam_size=3",
                   "--diversity_groups=2")
  assert bad.returncode == 2
  assert "error: beam size must be a multiple of the diversity groups (2)" \
      in bad.stderr


def test_decoding_table_scores_each_setting(exported, scene_data, tmp_path):
  run_dir, _ = exported
  root, paths = scene_data
  settings = tmp_path / "settings.json"
  settings.write_text(json.dumps([
      {"label": "greedy", "options": {"method": "greedy"}},
      {"label": "beam 2, min length 4",
       "options": {"beam_size": 2, "min_length": 4}}]))
  result = run_module("experiments.decoding", f"--run_dir={run_dir}",
                      f"--captions={paths['val']}", "--split=",
                      f"--settings={settings}", f"--output={tmp_path / 'out'}",
                      "--limit=12", "--meteor=false")
  assert result.returncode == 0, result.stderr[-3000:]
  table = json.loads((tmp_path / "out" / "table.json").read_text())
  assert table["images"] == 12
  greedy, longer = table["rows"]
  assert longer["mean length"] >= 4  # Every caption, so the mean too.
  assert greedy["METEOR"] is None  # Not asked for.
  assert 0 <= greedy["BLEU-4"] <= 1 and 0 < greedy["distinct"] <= 1
  markdown = (tmp_path / "out" / "table.md").read_text().splitlines()
  assert markdown[0].startswith("| setting | BLEU-4 | METEOR | CIDEr-D")
  assert markdown[3].startswith("| beam 2, min length 4 | ")


@pytest.mark.parametrize(
    "path", sorted((REPO / "experiments" / "suites").glob("decoding*.json")),
    ids=lambda path: path.name)
def test_committed_decoding_settings_pass_the_check_before_loading(path):
  from experiments.decoding import read_settings
  settings = read_settings(path)
  assert settings and all(s["label"] for s in settings)


@pytest.mark.parametrize("setting, error", [
    ({"label": "typo", "options": {"no_repeat_ngram": 3}},
     "setting 'typo': no_repeat_ngram: not an option of the beam search"),
    ({"label": "greedy", "options": {"method": "greedy", "beam_size": 3}},
     "setting 'greedy': beam_size: not an option of the greedy search"),
    ({"label": "nucleus", "options": {"method": "nucleus"}},
     "setting 'nucleus': unknown search method 'nucleus'")])
def test_decoding_table_rejects_a_wrong_setting_before_loading(
    tmp_path, setting, error):
  """One line naming the file and the setting, before any model loads (the
  run directory does not even exist)."""
  settings = tmp_path / "settings.json"
  settings.write_text(json.dumps([
      {"label": "beam 3", "options": {"beam_size": 3}}, setting]))
  result = run_module("experiments.decoding", f"--run_dir={tmp_path / 'no'}",
                      f"--captions={tmp_path / 'none.txt'}",
                      f"--settings={settings}", f"--output={tmp_path / 'o'}")
  assert result.returncode == 2
  assert f"error: {settings}: {error}" in result.stderr
  assert not (tmp_path / "o").exists()


def test_decoding_table_rejects_repeated_labels(tmp_path):
  from experiments.decoding import read_settings
  settings = tmp_path / "settings.json"
  settings.write_text(json.dumps([{"label": "a", "options": {}}] * 2))
  with pytest.raises(InputError, match=f"^{re.escape(str(settings))}: "
                     "labels name the table's rows, and 'a' names more "
                     "than one$"):
    read_settings(settings)
