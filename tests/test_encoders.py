"""Tests of the image encoders: shapes, preprocessing, weights, offline use.

Shapes: B batch, S image side, L locations, D channels.
"""

import os
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from im2txt_ext.encoders import backbones
from im2txt_ext.encoders import features
from im2txt_ext.encoders import specs
from im2txt_ext.errors import InputError

REPO = Path(__file__).parents[1]

# name -> (small image side, L at that side); sides as small as Keras allows.
SMALL = {
    "inception_v3": (75, 1),
    "vgg16": (32, 4),
    "vgg19": (32, 4),
    "resnet50": (32, 1),
    "mobilenet_v2": (32, 1),
    "efficientnet_b0": (32, 1),
    "efficientnet_lite0": (32, 1),
    "efficientnet_lite1": (32, 1),
    "efficientnet_lite2": (32, 1),
    "scene_cnn": (64, 64),
}


def _images(batch, size, seed=0):
  """Random float32 images [B, S, S, 3] in 0..255."""
  return np.random.default_rng(seed).uniform(
      0, 255, (batch, size, size, 3)).astype("float32")


def test_every_encoder_is_tested():
  assert set(SMALL) == set(specs.ENCODERS)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_output_shapes_small_images(name):
  size, locations = SMALL[name]
  dim = specs.encoder_spec(name).dim
  encoder = backbones.build_encoder(name, image_size=size)
  outputs = encoder(_images(2, size))
  assert set(outputs) == {"pooled", "spatial"}
  assert tuple(outputs["pooled"].shape) == (2, dim)
  assert tuple(outputs["spatial"].shape) == (2, locations, dim)
  assert specs.encoder_spec(name).grid_at(size)**2 == locations
  assert outputs["pooled"].dtype == "float32"
  assert outputs["spatial"].dtype == "float32"


@pytest.mark.parametrize("name", sorted(SMALL))
def test_spec_matches_model_at_default_size(name):
  spec = specs.encoder_spec(name)
  encoder = backbones.build_encoder(name)
  assert encoder.input_shape == (None, spec.image_size, spec.image_size, 3)
  assert encoder.output["pooled"].shape == (None, spec.dim)
  assert encoder.output["spatial"].shape == (None, spec.grid**2, spec.dim)
  assert spec.grid_at(spec.image_size) == spec.grid


@pytest.mark.parametrize("name,size,grid", [
    ("efficientnet_lite0", 448, 14),
    ("efficientnet_lite1", 448, 14),
    ("efficientnet_lite2", 448, 14),
    ("efficientnet_lite2", 300, 10),  # Not proportional: ceil(300 / 32).
    ("efficientnet_b0", 300, 10),
    ("mobilenet_v2", 100, 4),
    ("resnet50", 100, 4),
    ("vgg16", 100, 6),  # floor(100 / 16): unpadded pooling.
    ("inception_v3", 331, 9),
    ("scene_cnn", 100, 12),
])
def test_spatial_grid_follows_image_size(name, size, grid):
  """A larger input gives a finer attention map, e.g. 14x14 at 448 px, the
  grid VGG's conv5 gave Show, Attend and Tell at 224."""
  spec = specs.encoder_spec(name)
  assert spec.grid_at(size) == grid
  encoder = backbones.build_encoder(name, image_size=size)
  assert encoder.output["spatial"].shape == (None, grid * grid, spec.dim)


def test_lite_encoders_use_their_native_side():
  sides = {name: specs.encoder_spec(name).image_size
           for name in ("efficientnet_lite0", "efficientnet_lite1",
                        "efficientnet_lite2")}
  assert sides == {"efficientnet_lite0": 224, "efficientnet_lite1": 240,
                   "efficientnet_lite2": 260}


def test_feature_extraction_at_a_larger_side(tmp_path):
  """Features extracted at --image_size=448 hold a 14x14 map per image, and
  the cache's index records the side."""
  image = tmp_path / "photo.png"
  image.write_bytes(tf.io.encode_png(np.random.default_rng(0).integers(
      0, 256, (120, 90, 3), dtype=np.uint8)).numpy())
  output = tmp_path / "features.npy"
  env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="3")
  result = subprocess.run(
      [sys.executable, "-m", "im2txt_ext.cli.extract_features",
       "--encoder=efficientnet_lite2", "--weights=none", "--kind=spatial",
       "--image_size=448", f"--images={tmp_path}", f"--output={output}"],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr
  image_ids, array = features.load_features(str(output))
  assert image_ids == ["photo.png"]
  assert array.shape == (1, 14 * 14, 1280)
  assert features.read_index(str(output))["image_size"] == 448


def test_vgg16_spatial_is_block5_conv3_before_pooling():
  encoder = backbones.build_encoder("vgg16")
  assert encoder.output["spatial"].shape == (None, 14 * 14, 512)


def test_pooled_is_mean_of_spatial():
  encoder = backbones.build_encoder("scene_cnn")
  outputs = encoder(_images(2, 64))
  np.testing.assert_allclose(outputs["pooled"],
                             np.mean(outputs["spatial"], axis=1), atol=1e-5)


@pytest.mark.parametrize("name,preprocess", [
    ("vgg16", keras.applications.vgg16.preprocess_input),
    ("mobilenet_v2", keras.applications.mobilenet_v2.preprocess_input),
    ("efficientnet_lite0", lambda x: (x - 127.0) / 128.0),
    ("efficientnet_lite1", lambda x: (x - 127.0) / 128.0),
    ("efficientnet_lite2", lambda x: (x - 127.0) / 128.0),
])
def test_preprocessing_inside_equals_preprocess_outside(name, preprocess):
  encoder = backbones.build_encoder(name, image_size=32)
  images = _images(2, 32)
  backbone = encoder.get_layer(name)
  expected = np.mean(backbone(preprocess(images.copy())), axis=(1, 2))
  np.testing.assert_allclose(encoder(images)["pooled"], expected, atol=1e-4,
                             rtol=1e-4)


def test_frozen_backbone_has_no_trainable_weights_and_inference_batchnorm():
  encoder = backbones.build_encoder("scene_cnn")
  assert not encoder.trainable_weights
  images = _images(2, 64)
  np.testing.assert_allclose(encoder(images, training=True)["pooled"],
                             encoder(images, training=False)["pooled"])


def test_trainable_backbone():
  encoder = backbones.build_encoder("scene_cnn", trainable=True)
  # 4 convolutions and 4 BatchNorm (gamma, beta) layers train.
  assert len(encoder.trainable_weights) == 4 + 4 * 2


def test_scene_cnn_parameter_count():
  encoder = backbones.build_encoder("scene_cnn")
  # Convolutions 3*3*in*out without bias (blocks 2 and 3 see 2 coordinate
  # channels more); BatchNorm 4 per channel.
  convs = 9 * (3 * 32 + 32 * 64 + (64 + 2) * 128 + (128 + 2) * 128)
  batch_norms = 4 * (32 + 64 + 128 + 128)
  assert encoder.count_params() == convs + batch_norms


def test_weights_file_round_trip(tmp_path):
  encoder = backbones.build_encoder("scene_cnn")
  path = str(tmp_path / "scene.weights.h5")
  encoder.get_layer("scene_cnn").save_weights(path)
  reloaded = backbones.build_encoder("scene_cnn", weights=path)
  images = _images(2, 64)
  np.testing.assert_allclose(reloaded(images)["spatial"],
                             encoder(images)["spatial"])


def test_saved_encoder_reloads(tmp_path):
  encoder = backbones.build_encoder("scene_cnn")
  path = str(tmp_path / "encoder.keras")
  encoder.save(path)
  reloaded = keras.models.load_model(path)
  images = _images(2, 64)
  np.testing.assert_allclose(reloaded(images)["pooled"],
                             encoder(images)["pooled"], atol=1e-6)


def test_imagenet_offline_fails_fast(tmp_path, monkeypatch):
  monkeypatch.setenv("KERAS_HOME", str(tmp_path))
  probed = []
  monkeypatch.setattr(backbones, "can_reach",
                      lambda host: probed.append(host) or False)
  started = time.perf_counter()
  with pytest.raises(InputError) as error:
    backbones.build_encoder("resnet50", weights="imagenet")
  assert time.perf_counter() - started < 5
  assert probed == [backbones.KERAS_WEIGHTS_HOST]
  message = str(error.value)
  assert "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5" in message
  assert str(tmp_path / "models") in message
  assert "\n" not in message


def test_can_reach_unreachable_host_is_quick():
  started = time.perf_counter()
  assert not backbones.can_reach("host.invalid", timeout=1.0)
  assert time.perf_counter() - started < 5


@pytest.mark.parametrize("kwargs,message", [
    (dict(name="alexnet"), "unknown encoder"),
    (dict(name="scene_cnn", weights="imagenet"), "no pretrained weights"),
    (dict(name="inception_v3", image_size=64), "at least 75"),
    (dict(name="vgg16", weights="/no/such/file.h5"), "not found"),
])
def test_bad_arguments(kwargs, message):
  with pytest.raises(InputError, match=message):
    backbones.build_encoder(**kwargs)


@pytest.mark.filterwarnings("ignore::UserWarning")  # Keras lists the misfits.
def test_wrong_weights_file(tmp_path):
  path = str(tmp_path / "scene.weights.h5")
  backbones.build_encoder("scene_cnn").get_layer("scene_cnn").save_weights(
      path)
  with pytest.raises(InputError, match="cannot load weights into mobilenet"):
    backbones.build_encoder("mobilenet_v2", weights=path, image_size=32)
