"""im2txt_ext.caption: every form of an image, run directories and exports
alike, the model cache, clear errors, attention, and im2txt-caption over
it."""

import pathlib

import numpy as np
from PIL import Image
import pytest
import tensorflow as tf

import im2txt_ext
from im2txt_ext import api
from im2txt_ext.errors import InputError
from im2txt_ext.inference import Captioner
from test_export import image_paths, run_module
from test_export import exported, soft_attention_export  # noqa: F401

BEAM, LENGTH, TOP_K = 3, 12, 2
SIZES = dict(beam_size=BEAM, max_length=LENGTH, top_k=TOP_K)
OPTIONS = dict(beam_size=4, max_length=6, top_k=4, min_length=2,
               no_bad_endings=True, no_repeat_ngram_size=2,
               diversity_groups=2, diversity_strength=0.5)


@pytest.fixture(scope="module")
def models(exported):
  """(run dir, export dir) of test_export's tiny Show and Tell (beam 3, 12
  words, 2 captions)."""
  return exported


def library_captions(expected):
  """Captioner.caption_files results -> the API's: per image, per caption
  {caption, log_prob}."""
  return [[{"caption": o["caption"], "log_prob": o["log_prob"]}
           for o in e["captions"]] for e in expected]


def assert_same(got, want):
  assert [[o["caption"] for o in g] for g in got] == \
      [[o["caption"] for o in w] for w in want]
  np.testing.assert_allclose([[o["log_prob"] for o in g] for g in got],
                             [[o["log_prob"] for o in w] for w in want],
                             rtol=1e-4)


def test_every_form_of_an_image_gives_its_captions(models, scene_data):
  run_dir, _ = models
  path, other = image_paths(scene_data, 2)
  pixels = np.asarray(Image.open(path).convert("RGB"))
  forms = [path, pathlib.Path(path), open(path, "rb").read(),
           Image.open(path), pixels, pixels.astype(np.float32),
           tf.constant(pixels)]
  got = im2txt_ext.caption(forms + [other], model=run_dir, **SIZES)
  want = library_captions(Captioner(str(run_dir)).caption_files(
      [path, other], **SIZES))
  assert len(got) == len(forms) + 1
  assert_same(got, want[:1] * len(forms) + want[1:])
  # One image (not a list): its captions alone.
  assert_same([im2txt_ext.caption(pixels, model=run_dir, **SIZES)], want[:1])


def test_run_directory_captions_like_caption_files(models, scene_data):
  run_dir, _ = models
  paths = image_paths(scene_data, 3)
  captioner = Captioner(str(run_dir))
  for options in (OPTIONS, dict(method="greedy", max_length=5)):
    got = im2txt_ext.caption(paths, model=str(run_dir), batch_size=2,
                             **options)
    assert got == library_captions(captioner.caption_files(paths,
                                                           **options))


def test_export_captions_like_the_run_directory(models, scene_data):
  run_dir, model_dir = models
  paths = image_paths(scene_data, 3)
  # Without options, the export's own sizes; a loaded model works as well.
  from_export = im2txt_ext.caption(paths, model=model_dir)
  assert_same(from_export, im2txt_ext.caption(
      paths, model=Captioner(str(run_dir)), **SIZES))
  assert {type(o["caption"]) for o in from_export[0]} == {str}
  assert_same(im2txt_ext.caption(paths, model=tf.saved_model.load(
      str(model_dir)), **OPTIONS),
              im2txt_ext.caption(paths, model=run_dir, **OPTIONS))


def test_a_model_is_loaded_once(models, scene_data, monkeypatch):
  run_dir, model_dir = models
  path = image_paths(scene_data, 1)[0]
  loads = []
  for kind, loader in list(api.LOADERS.items()):
    monkeypatch.setitem(api.LOADERS, kind, lambda folder, kind=kind,
                        loader=loader: loads.append(kind) or loader(folder))
  im2txt_ext.caption.cache_clear()
  first = im2txt_ext.caption(path, model=run_dir, **SIZES)
  monkeypatch.chdir(run_dir.parent)  # The same folder by another name.
  assert im2txt_ext.caption(path, model="run", **SIZES) == first
  im2txt_ext.caption(path, model=model_dir)
  im2txt_ext.caption(path, model=str(model_dir))
  assert loads == ["run", "export"]
  im2txt_ext.caption.cache_clear()
  im2txt_ext.caption(path, model=run_dir, **SIZES)
  assert loads == ["run", "export", "run"]


def test_clear_one_line_errors(models, scene_data, tmp_path):
  run_dir, model_dir = models
  path = image_paths(scene_data, 1)[0]
  not_image = tmp_path / "photo.jpg"
  not_image.write_text("hello")
  cases = [
      ((path, run_dir), dict(beam_sise=3),
       "beam_sise: not an option of the beam search (it takes method, "
       "beam_size, max_length, top_k, min_length"),
      ((path, run_dir), dict(method="greedy", top_k=2),
       "top_k: not an option of the greedy search"),
      ((path, run_dir), dict(method="nucleus"),
       "unknown search method 'nucleus'"),
      ((path, model_dir), dict(length_normalization="gnmt", top_p=0.9),
       "length_normalization, top_p: not an option of an export (it takes "
       "method, beam_size"),
      ((path, model_dir), dict(method="greedy"),
       "an export searches with method beam only, not 'greedy'"),
      ((path, model_dir), dict(length_penalty="high"),
       "length_penalty must be of type float32, got 'high'"),
      ((path, model_dir), dict(beam_size=0),
       "beam size must be a positive integer up to"),
      ((path, run_dir), dict(attention=True),
       "attention=True: this model's decoder has no attention"),
      ((tmp_path / "nope.png", run_dir), {},
       "nope.png: cannot read image (No such file or directory)"),
      ((not_image, model_dir), {}, "photo.jpg: corrupt or truncated image"),
      (([path, b"hello"], run_dir), {}, "image 1: corrupt or truncated"),
      ((np.zeros((8, 8)), run_dir), {},
       "image 0: not an image: give a path, encoded bytes, a PIL image or an "
       "[H, W, 3] array, not ndarray of shape (8, 8)"),
      ((np.full((8, 8, 3), 300.0), run_dir), {},
       "image 0: pixel values must be numbers in 0..255"),
      ((path, tmp_path), {}, "neither a run directory (no config.json) nor "
       "an export (no saved_model.pb)"),
      ((path, tmp_path / "missing"), {}, "run directory not found"),
  ]
  for (images, model), options, message in cases:
    with pytest.raises(InputError) as error:
      im2txt_ext.caption(images, model=model, **options)
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_attention_weights_per_word(scene_data, soft_attention_export):
  """A soft-attention run and its export: one [L] map per word and <end>."""
  run_dir, model_dir = soft_attention_export
  path = image_paths(scene_data, 1)[0]
  sizes = dict(beam_size=2, max_length=6, top_k=2)
  options = im2txt_ext.caption(path, model=run_dir, attention=True, **sizes)
  assert len(options) == 2
  for option in options:
    weights = np.array(option["attention"])  # [T, L]: 4x4 maps at 32 px.
    assert weights.shape == (min(len(option["caption"].split()) + 1, 6), 16)
    np.testing.assert_allclose(weights.sum(-1), 1.0, atol=2e-3)
  from_export = im2txt_ext.caption(path, model=model_dir, attention=True,
                                **sizes)
  assert_same([from_export], [options])
  for got, want in zip(from_export, options):
    np.testing.assert_allclose(got["attention"], want["attention"],
                               atol=2e-4)


def test_caption_command_takes_an_export(models, scene_data):
  run_dir, model_dir = models
  paths = image_paths(scene_data, 2)
  result = run_module("im2txt_ext.cli.caption", f"--model={model_dir}",
                      f"--images={','.join(paths)}", "--beam_size=4",
                      "--top_k=2", "--min_length=2")
  assert result.returncode == 0, result.stderr[-3000:]
  lines = [line.split("\t") for line in result.stdout.strip().splitlines()]
  want = im2txt_ext.caption(paths, model=run_dir, beam_size=4, top_k=2,
                            min_length=2)
  assert [(line[0], line[1]) for line in lines] == [
      (path, o["caption"]) for path, w in zip(paths, want) for o in w]
