"""The TFLite export (im2txt-export --format=tflite) and its numpy runtime
(im2txt_ext.lite): float32 models caption as the SavedModel, int8 within a
stated tolerance, the command-line flag, refused decoders and one-line
errors."""

import json
import shutil

import numpy as np
import pytest
import tensorflow as tf

from im2txt_ext import lite, lite_export, runs
from im2txt_ext.config import ExperimentConfig, apply_overrides
from im2txt_ext.data.vocabulary import Vocabulary
from im2txt_ext.errors import InputError
from im2txt_ext.inference import Captioner
from test_export import BEAM, LENGTH, TOP_K, image_paths, run_module
from test_export import tiny_overrides
from test_export import exported, soft_attention_export  # noqa: F401

try:
  lite.interpreter_class()
except InputError as error:
  pytest.skip(f"no TFLite interpreter ({error})", allow_module_level=True)

OPTIONS = dict(beam_size=4, max_length=5, length_penalty=0.5, min_length=2,
               no_bad_endings=True, no_repeat_ngram_size=2,
               repetition_penalty=1.2)


@pytest.fixture(scope="module")
def show_and_tell_lite(exported, tmp_path_factory):
  """(run dir, SavedModel dir, float32 TFLite export) of test_export's tiny
  Show and Tell, with the SavedModel's search defaults."""
  run_dir, model_dir = exported
  folder = tmp_path_factory.mktemp("lite") / "float32"
  lite_export.export_tflite(str(run_dir), str(folder), beam_size=BEAM,
                            max_length=LENGTH, top_k=TOP_K)
  return run_dir, model_dir, folder


@pytest.fixture(scope="module")
def int8_lite(exported, tmp_path_factory):
  """The int8 TFLite export of the same model, written by im2txt-export."""
  run_dir, _ = exported
  folder = tmp_path_factory.mktemp("lite") / "int8"
  result = run_module("im2txt_ext.cli.export", f"--run_dir={run_dir}",
                      f"--output={folder}", "--format=tflite",
                      "--tflite_weights=int8", f"--beam_size={BEAM}",
                      f"--max_length={LENGTH}", f"--top_k={TOP_K}")
  assert result.returncode == 0, result.stderr[-3000:]
  assert f"wrote {folder} (int8 weights)" in result.stdout
  assert "step.tflite: " in result.stdout
  return folder


def saved_model_outputs(model_dir, paths, top_k=None, **options):
  """serving_default's outputs, or caption_with_options' for ``top_k`` and
  ``options`` (as numpy)."""
  model = tf.saved_model.load(str(model_dir))
  images = tf.constant([open(p, "rb").read() for p in paths])
  if not options:
    out = model.signatures["serving_default"](images=images)
  else:
    values = dict(k=top_k, diversity_groups=1, diversity_strength=0.0,
                  **options)
    out = model.signatures["caption_with_options"](
        images=images, **{name: tf.constant(value) for name, value in
                          values.items()})
  return {name: value.numpy() for name, value in out.items()}


def assert_same_captions(got, want):
  """LiteCaptioner.caption results against SavedModel outputs."""
  assert [[o["caption"] for o in g] for g in got] == \
      want["captions"].astype(str).tolist()
  np.testing.assert_allclose([[o["log_prob"] for o in g] for g in got],
                             want["log_probs"], rtol=1e-4, atol=1e-5)
  if "attention" in want:
    for image, options in enumerate(got):
      for k, option in enumerate(options):
        rows = len(option["attention"])
        np.testing.assert_allclose(option["attention"],
                                   want["attention"][image, k, :rows],
                                   atol=2e-4)


def assert_static_state(captioner, decoder):
  """The step model's static inputs (in, never out) are the entries of the
  decoder's ``static_state``."""
  def static(name):
    return any(name == f"state_{key}" or name.startswith(f"state_{key}_")
               for key in decoder.static_state)
  assert captioner.static == tuple(
      name for name in captioner.step.inputs if static(name))


def test_float32_show_and_tell_captions_like_the_saved_model(
    show_and_tell_lite, scene_data):
  run_dir, model_dir, folder = show_and_tell_lite
  paths = image_paths(scene_data, 6)
  captioner = lite.LiteCaptioner(str(folder))
  assert captioner.static == () and not captioner.has_attention
  # The export's defaults: its sizes and the library's decoding defaults.
  assert_same_captions(captioner.caption(paths),
                       saved_model_outputs(model_dir, paths))
  assert_same_captions(
      captioner.caption(paths, top_k=4, **OPTIONS),
      saved_model_outputs(model_dir, paths, top_k=4, **OPTIONS))
  greedy = dict(method="greedy", max_length=7, min_length=1)
  want = Captioner(str(run_dir)).caption_files(paths, **greedy)
  got = captioner.caption_files(paths, **greedy)
  assert [g["caption"] for g in got] == [w["caption"] for w in want]
  np.testing.assert_allclose([g["log_prob"] for g in got],
                             [w["log_prob"] for w in want], rtol=1e-4)


def test_float32_soft_attention_captions_like_the_saved_model(
    soft_attention_export, scene_data, tmp_path):
  run_dir, model_dir = soft_attention_export
  lite_export.export_tflite(str(run_dir), str(tmp_path / "lite"),
                            beam_size=2, max_length=8, top_k=2)
  captioner = lite.LiteCaptioner(str(tmp_path / "lite"))
  assert captioner.static  # The image's features and attention keys.
  assert_static_state(captioner, runs.TrainedModel(str(run_dir)).decoder)
  paths = image_paths(scene_data, 6)
  assert_same_captions(captioner.caption(paths),
                       saved_model_outputs(model_dir, paths))
  assert_same_captions(
      captioner.caption(paths, top_k=4, **OPTIONS),
      saved_model_outputs(model_dir, paths, top_k=4, **OPTIONS))


def untrained_run(scene_data, run_dir, decoder, *overrides):
  """A run directory of a tiny model at its initial weights (no training:
  the export only needs a checkpoint)."""
  config = apply_overrides(ExperimentConfig(),
                           tiny_overrides(scene_data, decoder) +
                           list(overrides))
  run_dir.mkdir()
  config.save(str(run_dir / runs.CONFIG_FILE))
  vocab = Vocabulary(f"word{i}" for i in range(12))
  vocab.save(str(run_dir / runs.VOCAB_FILE))
  model = runs.build_decoder(config, len(vocab), with_encoder=True)
  runs.build_from_batch(model, {"image": tf.zeros([1, 32, 32, 3]),
                                "input_ids": tf.zeros([1, 2], tf.int32)})
  tf.train.CheckpointManager(
      tf.train.Checkpoint(model=model, step=tf.Variable(0, dtype=tf.int64)),
      str(run_dir / runs.CHECKPOINTS_DIR), 1).save()
  return run_dir


@pytest.mark.parametrize("decoder, overrides", [
    ("rnn_baseline", ()), ("hard_attention", ()),
    ("transformer", ("model.decoder_options.num_layers=1",
                     "model.decoder_options.num_heads=2",
                     "model.decoder_options.max_positions=8",
                     "data.max_caption_length=7"))])
def test_the_other_decoders_caption_like_the_library(decoder, overrides,
                                                     scene_data, tmp_path):
  run_dir = untrained_run(scene_data, tmp_path / "run", decoder, *overrides)
  sizes = lite_export.export_tflite(str(run_dir), str(tmp_path / "lite"),
                                    beam_size=3, max_length=8, top_k=2)
  assert sorted(sizes) == ["encoder.tflite", "lite.json", "step.tflite",
                           "vocab.txt"]
  captioner = lite.LiteCaptioner(str(tmp_path / "lite"))
  library = Captioner(str(run_dir))
  assert_static_state(captioner, library.decoder)
  if hasattr(library.decoder, "max_steps"):
    # The Transformer: its state holds a key/value cache of that length.
    assert any(library.decoder.max_steps in details["shape"][1:]
               for name, details in captioner.step.outputs.items()
               if name.startswith(lite.STATE_PREFIX))
    with pytest.raises(InputError, match="max length must be in 1..8, "
                       "got 9"):
      captioner.caption(image_paths(scene_data, 1), max_length=9)
  paths = image_paths(scene_data, 3)
  for options in (dict(beam_size=3, max_length=8, top_k=2),
                  dict(method="greedy", max_length=8)):
    got = captioner.caption_files(paths, **options)
    want = library.caption_files(paths, **options)
    assert [[o["caption"] for o in g["captions"]] for g in got] == \
        [[o["caption"] for o in w["captions"]] for w in want]


def test_int8_weights_keep_the_captions_within_tolerance(
    show_and_tell_lite, int8_lite, scene_data):
  """Dynamic-range int8 stores each weight matrix of 1024 values or more
  (here the CNN's convolutions) in 8 bits, 256 levels, so a word flips only
  where two words' scores are closer than that rounding moves them.
  Tolerance over 16 images: >= 90% of the float32 captions' words, position
  by position, >= 3 in 4 captions the same, and where the same, their
  log-probability within 0.05 nats on average (measured: 100%, 16 of 16 and
  0.0006 nats). A flipped word sends the beam elsewhere, and its caption is
  another sentence with its own log-probability (a CI run once had one of 16
  images 2.97 nats away), so only same captions' log-probabilities are
  compared. A broken quantisation (wrong scales, a dropped bias) fails all
  three by far. The trained scene models' figures, where the decoder is
  quantised too, are bench_lite's."""
  _, _, float32 = show_and_tell_lite
  with open(int8_lite / lite.MANIFEST_FILE) as f:
    assert json.load(f)["weights"] == "int8"
  size = lambda folder, name: (folder / name).stat().st_size  # noqa: E731
  # The CNN's convolutions are quantised; the tiny decoder's matrices are
  # mostly under 1024 values, left in float32.
  assert size(int8_lite, lite.ENCODER_FILE) < \
      0.4 * size(float32, lite.ENCODER_FILE)
  assert size(int8_lite, lite.STEP_FILE) <= size(float32, lite.STEP_FILE)
  paths = image_paths(scene_data, 16)
  want = lite.LiteCaptioner(str(float32)).caption_files(paths, top_k=1)
  got = lite.LiteCaptioner(str(int8_lite)).caption_files(paths, top_k=1)
  matches, words = 0, 0
  for g, w in zip(got, want):
    g_words, w_words = g["caption"].split(), w["caption"].split()
    matches += sum(a == b for a, b in zip(g_words, w_words))
    words += max(len(g_words), len(w_words), 1)
  assert matches / words >= 0.9, (matches, words)
  same = [(g["log_prob"], w["log_prob"]) for g, w in zip(got, want)
          if g["caption"] == w["caption"]]
  assert len(same) >= 0.75 * len(want), (len(same), len(want))
  assert np.mean([abs(g - w) for g, w in same]) < 0.05, same


class GrowingState:
  """A decoder (step contract) whose state keeps every word fed so far:
  its state grows at each step, so no fixed-size step model holds it."""

  static_state = ()

  def __init__(self, decoder):
    self.decoder, self.variables = decoder, decoder.variables

  def encode(self, batch):
    return self.decoder.encode(batch)

  def initial_state(self, features):
    state = self.decoder.initial_state(features)
    return {**state, "words": tf.zeros([tf.shape(features)[0], 0],
                                       tf.int32)}

  def step(self, word_ids, state):
    words = state.pop("words")
    out = self.decoder.step(word_ids, state)
    return out._replace(state={**out.state, "words": tf.concat(
        [words, word_ids[:, None]], 1)})


def test_a_decoder_that_cannot_be_a_step_model_is_refused(exported):
  run_dir, _ = exported
  decoder = runs.TrainedModel(str(run_dir)).decoder
  with pytest.raises(InputError) as error:
    lite_export.convert(GrowingState(decoder), 32, name="growing")
  assert str(error.value) == (
      "decoder 'growing' cannot be exported to TFLite: its state entry "
      "words goes from int32 (0,) to int32 (1,) at a step (a step model "
      "needs a fixed-size state)")


def test_one_line_errors(show_and_tell_lite, scene_data, tmp_path):
  _, _, folder = show_and_tell_lite
  captioner = lite.LiteCaptioner(str(folder))
  path = image_paths(scene_data, 1)
  broken = tmp_path / "broken"
  shutil.copytree(folder, broken)
  (broken / lite.STEP_FILE).write_bytes(b"not a model")
  cases = [
      (lambda: captioner.caption(path, method="sample"),
       "search method 'sample' is not supported by the TFLite runtime: use "
       "beam or greedy"),
      (lambda: captioner.caption(path, diversity_groups=2),
       "diversity_groups=2: diverse beam search is not supported by the "
       "TFLite runtime"),
      (lambda: captioner.caption(path, method="greedy", beam_size=2),
       "beam_size: not an option of the greedy search (it takes "
       "max_length, min_length"),
      (lambda: captioner.caption(path, beam_size=0),
       "beam size must be a positive integer up to 20, the words the "
       "search may emit, got 0"),
      (lambda: captioner.caption(path, top_k=4),
       f"top_k must be in 1..{BEAM}, got 4"),
      (lambda: captioner.caption(path, length_penalty="high"),
       "length penalty must be >= 0, got 'high'"),
      (lambda: captioner.caption(path, length_normalization="log"),
       "length normalization must be one of plain, gnmt, got 'log'"),
      (lambda: captioner.caption([np.zeros((8, 8))]),
       "an image is [H, W, 3], not [8, 8]"),
      (lambda: captioner.caption([tmp_path / "none.png"]),
       "none.png: cannot read the image"),
      (lambda: lite.LiteCaptioner(str(tmp_path)),
       "not a TFLite export (no lite.json; write one with im2txt-export "
       "--format=tflite)"),
      (lambda: lite.LiteCaptioner(str(broken)),
       "step.tflite: not a TFLite model"),
      (lambda: lite_export.convert(None, 32, "int4"),
       "TFLite weights must be one of float32, float16, int8, got 'int4'"),
  ]
  for call, message in cases:
    with pytest.raises(InputError) as error:
      call()
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_resize_is_tensorflows():
  """load_image's resize gives pipeline.decode_image's pixels."""
  image = np.random.default_rng(0).uniform(0, 255, (37, 50, 3))
  for size in (16, 64):
    np.testing.assert_allclose(
        lite.resize_bilinear(image, size),
        tf.image.resize(tf.constant(image, tf.float32), [size, size]),
        atol=1e-3)
