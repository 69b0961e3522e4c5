"""Shared fixtures: a tiny scene dataset generated once per session."""

import os
import pathlib

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


@pytest.fixture(scope="session")
def scene_data(tmp_path_factory):
  """A small embedded scene dataset: {split: captions path}, images/."""
  from im2txt_ext.data import scenes
  root = tmp_path_factory.mktemp("scenes")
  paths = scenes.generate(str(root), num_train=64, num_val=16, num_test=16,
                          seed=1, image_size=32)
  return root, paths
