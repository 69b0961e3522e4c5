"""The JSON index beside a features cache (``features.py`` writes both): the
image ids in row order, the encoder and image side, the kind of feature,
the array shape, the rows done and skipped. Reading it needs no
TensorFlow, so the comparison driver plans and reports without it.
"""

import json
import os

from im2txt_ext.errors import InputError


def index_path(output):
  """The JSON index that goes with a features ``.npy`` file."""
  return os.path.splitext(output)[0] + ".json"


def write_index(path, index):
  """Replaces the index at ``path`` atomically (a killed write leaves the
  old one)."""
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(index, f)
  os.replace(tmp, path)


def read_index(path):
  """Reads the JSON index of a features file (the ``.npy`` or ``.json``)."""
  if not os.path.exists(path):
    raise InputError("features file not found", path)
  path = index_path(path)
  try:
    with open(path) as f:
      return json.load(f)
  except FileNotFoundError as e:
    raise InputError("no features index", path) from e
  except json.JSONDecodeError as e:
    raise InputError(f"features index is not valid JSON ({e})", path) from e
