"""Shared fixtures: a tiny scene dataset generated once per session."""

import ast
import os
import pathlib

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


def setup_argument(name, default=None):
  """The literal value of setup.py's ``setup(name=...)`` argument."""
  tree = ast.parse((REPO / "setup.py").read_text(encoding="utf-8"))
  for node in ast.walk(tree):
    if isinstance(node, ast.keyword) and node.arg == name:
      return ast.literal_eval(node.value)
  return default


def console_scripts():
  """{command: (module, function)} of setup.py's console scripts."""
  scripts = setup_argument("entry_points", {}).get("console_scripts", [])
  return {name: tuple(target.split(":")) for name, target in
          (script.split("=") for script in scripts)}


@pytest.fixture(scope="session")
def scene_data(tmp_path_factory):
  """A small embedded scene dataset: {split: captions path}, images/."""
  from im2txt_ext.data import scenes
  root = tmp_path_factory.mktemp("scenes")
  paths = scenes.generate(str(root), num_train=64, num_val=16, num_test=16,
                          seed=1, image_size=32)
  return root, paths
