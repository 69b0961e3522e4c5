"""Tests of the feature cache: round trip, resume, bad images, the CLI.

Shapes: N images, S image side, L locations, D channels.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from im2txt_ext.data.records import CaptionRecord
from im2txt_ext.encoders import backbones
from im2txt_ext.encoders import features
from im2txt_ext.errors import InputError

REPO = Path(__file__).parents[1]


def _write_images(directory, count=10):
  """Writes JPEG and PNG files (RGB, grey, RGBA, various sizes)."""
  rng = np.random.default_rng(0)
  records = []
  for i in range(count):
    channels = (3, 1, 4)[i % 3]
    pixels = rng.integers(0, 256, (40 + i, 50, channels), dtype=np.uint8)
    if channels == 3:
      name, data = f"img{i:02d}.jpg", tf.io.encode_jpeg(pixels, quality=90)
    else:
      name, data = f"img{i:02d}.png", tf.io.encode_png(pixels)
    path = os.path.join(directory, name)
    tf.io.write_file(path, data)
    records.append(CaptionRecord(name, path, [f"caption {i}"], "train"))
  return records


@pytest.fixture(scope="module")
def encoder():
  keras.utils.set_random_seed(1)
  return backbones.build_encoder("scene_cnn")


@pytest.fixture
def records(tmp_path):
  images = tmp_path / "images"
  images.mkdir()
  return _write_images(str(images))


def _expected(encoder, records, kind):
  images = np.stack([features.load_image(r.image_path, 64) for r in records])
  return encoder(images)[kind].numpy()


@pytest.mark.parametrize("kind,row_shape", [("pooled", (128,)),
                                            ("spatial", (64, 128))])
def test_round_trip(encoder, records, tmp_path, kind, row_shape):
  output = str(tmp_path / "out" / "features.npy")
  result = features.extract_features(records, encoder, output, kind,
                                     batch_size=4, progress=False)
  assert result["rows_done"] == result["encoded"] == 10
  assert result["skipped"] == []
  assert result["images_per_second"] > 0

  image_ids, array = features.load_features(output)
  assert image_ids == [r.image_id for r in records]
  assert array.shape == (10, *row_shape)
  assert array.dtype == np.float16
  np.testing.assert_allclose(array, _expected(encoder, records, kind),
                             rtol=2e-3, atol=2e-3)
  index = features.read_index(output)
  assert index["encoder"] == "scene_cnn"
  assert index["kind"] == kind
  assert index["shape"] == [10, *row_shape]


def test_pooled_features_from_spatial_ones(encoder, records, tmp_path):
  """The mean over the locations is the encoder's pooled output: the
  comparison driver encodes the images once for both kinds."""
  spatial = str(tmp_path / "spatial.npy")
  features.extract_features(records, encoder, spatial, "spatial",
                            batch_size=4, progress=False)
  pooled = str(tmp_path / "out" / "pooled.npy")
  index = features.pool_features(spatial, pooled)
  assert (index["kind"], index["shape"], index["pooled_from"]) == (
      "pooled", [10, 128], spatial)
  image_ids, array = features.load_features(pooled)
  assert image_ids == [r.image_id for r in records]
  assert array.dtype == np.float16
  np.testing.assert_allclose(array, _expected(encoder, records, "pooled"),
                             rtol=2e-3, atol=2e-3)
  with pytest.raises(InputError, match="holds pooled features, not spatial"):
    features.pool_features(pooled, str(tmp_path / "again.npy"))


def test_resume_after_interruption(encoder, records, tmp_path):
  full = str(tmp_path / "full.npy")
  features.extract_features(records, encoder, full, batch_size=4,
                            progress=False)
  output = str(tmp_path / "resumed.npy")
  first = features.extract_features(records, encoder, output, batch_size=4,
                                    max_batches=1, progress=False)
  assert first["rows_done"] == 4
  with pytest.raises(InputError, match="incomplete .4 of 10 rows"):
    features.load_features(output)

  second = features.extract_features(records, encoder, output, batch_size=4,
                                     progress=False)
  assert second["encoded"] == 6
  np.testing.assert_array_equal(features.load_features(output)[1],
                                features.load_features(full)[1])
  again = features.extract_features(records, encoder, output, batch_size=4,
                                    progress=False)
  assert again["encoded"] == 0


def test_resume_refuses_another_run(encoder, records, tmp_path):
  output = str(tmp_path / "features.npy")
  features.extract_features(records, encoder, output, max_batches=1,
                            batch_size=4, metadata={"weights": "a"},
                            progress=False)
  with pytest.raises(InputError, match="its metadata differs"):
    features.extract_features(records, encoder, output, batch_size=4,
                              metadata={"weights": "b"}, progress=False)
  with pytest.raises(InputError, match="its image_ids differs"):
    features.extract_features(records[::-1], encoder, output, batch_size=4,
                              metadata={"weights": "a"}, progress=False)


def _break(records):
  """Makes image 5 corrupt and image 9 (the last) missing."""
  Path(records[5].image_path).write_bytes(b"not an image at all")
  os.remove(records[9].image_path)


def test_bad_image_is_an_error_naming_the_file(encoder, records, tmp_path):
  _break(records)
  output = str(tmp_path / "features.npy")
  with pytest.raises(InputError) as error:
    features.extract_features(records, encoder, output, batch_size=4,
                              progress=False)
  assert str(error.value).startswith(records[5].image_path + ": cannot be "
                                     "decoded as an image")
  assert features.read_index(output)["rows_done"] == 4

  Path(records[5].image_path).unlink()
  with pytest.raises(InputError, match=": no such file"):
    features.extract_features(records, encoder, output, batch_size=4,
                              progress=False)


def test_bad_images_skipped(encoder, records, tmp_path):
  _break(records)
  output = str(tmp_path / "features.npy")
  result = features.extract_features(records, encoder, output, batch_size=4,
                                     skip_bad_images=True, progress=False)
  assert result["skipped"] == [5, 9]
  assert result["encoded"] == 8
  image_ids, array = features.load_features(output)
  assert len(image_ids) == 10
  assert not array[[5, 9]].any()
  good = [0, 1, 2, 3, 4, 6, 7, 8]
  np.testing.assert_allclose(
      array[good], _expected(encoder, [records[i] for i in good], "pooled"),
      rtol=2e-3, atol=2e-3)


def test_load_image_decodes_jpeg_as_pil_does(tmp_path):
  image = pytest.importorskip("PIL.Image")
  pixels = np.random.default_rng(0).integers(0, 256, (48, 48, 3), np.uint8)
  path = str(tmp_path / "square.jpg")
  tf.io.write_file(path, tf.io.encode_jpeg(pixels, quality=75))
  expected = np.asarray(image.open(path).convert("RGB"))
  np.testing.assert_array_equal(features.load_image(path, 48), expected)


def test_load_image_gives_rgb_of_the_asked_size(records):
  for record in records[:3]:  # RGB JPEG, grey PNG, RGBA PNG
    image = features.load_image(record.image_path, 32)
    assert image.shape == (32, 32, 3)
    assert image.dtype == tf.float32


def test_bad_arguments(encoder, records, tmp_path):
  with pytest.raises(InputError, match="must end in .npy"):
    features.extract_features(records, encoder, str(tmp_path / "f.bin"))
  with pytest.raises(InputError, match="unknown feature kind"):
    features.extract_features(records, encoder, str(tmp_path / "f.npy"),
                              kind="both")
  with pytest.raises(InputError, match="none.npy: features file not found"):
    features.load_features(str(tmp_path / "none.npy"))
  (tmp_path / "no_index.npy").write_bytes(b"")
  with pytest.raises(InputError, match="no_index.json: no features index"):
    features.load_features(str(tmp_path / "no_index.npy"))


def _run_cli(*args):
  env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="3")
  return subprocess.run(
      [sys.executable, "-m", "im2txt_ext.cli.extract_features", *args],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def test_cli_encodes_a_directory(records, tmp_path):
  output = tmp_path / "cli" / "features.npy"
  result = _run_cli("--encoder=scene_cnn", "--weights=none",
                    f"--images={os.path.dirname(records[0].image_path)}",
                    "--kind=spatial", f"--output={output}", "--batch_size=4")
  assert result.returncode == 0, result.stderr
  assert "images/s" in result.stdout
  image_ids, array = features.load_features(str(output))
  assert image_ids == sorted(r.image_id for r in records)
  assert array.shape == (10, 64, 128)
  with open(tmp_path / "cli" / "features.json") as f:
    assert json.load(f)["metadata"] == {"weights": "none"}


def test_cli_error_is_one_line(tmp_path):
  result = _run_cli("--encoder=scene_cnn", "--weights=none",
                    f"--images={tmp_path / 'missing'}",
                    f"--output={tmp_path / 'f.npy'}")
  assert result.returncode == 2
  last_line = result.stderr.strip().splitlines()[-1]
  assert last_line == f"error: {tmp_path / 'missing'}: not a directory"
  assert "Traceback" not in result.stderr
