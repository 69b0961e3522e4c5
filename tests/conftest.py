"""Shared fixtures: a tiny scene dataset generated once per session."""

import ast
import os
import pathlib

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
# Prefix of a `python -c` program: at exit it says on stderr whether it
# imported TensorFlow (commands that only plan or print need not).
REPORTS_TENSORFLOW = ("import atexit, sys; atexit.register(lambda: "
                      "'tensorflow' in sys.modules and print("
                      "'TensorFlow imported', file=sys.stderr)); ")


# How make test spreads the files over its processes (pytest-xdist,
# --dist=loadgroup): one group per file, except the files that use
# test_export's session fixtures (a model trained and exported), which share
# a group so that each fixture is built once; the groups go out in
# collection order, so the longest start first and the processes end
# together (seconds of each on a 2-core machine like CI's, 2026-12-02:
# the export group about 500, distribute 200, compare 140, training 120,
# cli 110, flickr8k 110; every other file under 90).
SHARED_GROUPS = {"test_api": "test_export", "test_lite": "test_export",
                 "test_serve": "test_export"}
LONGEST_FIRST = ("test_export", "test_distribute", "test_compare",
                 "test_training", "test_cli", "test_flickr8k")


def group_of(item):
  return SHARED_GROUPS.get(item.path.stem, item.path.stem)


@pytest.hookimpl(tryfirst=True)  # Before xdist reads the groups.
def pytest_collection_modifyitems(config, items):
  if not config.pluginmanager.hasplugin("xdist"):
    return
  for item in items:
    item.add_marker(pytest.mark.xdist_group(group_of(item)))
  rank = {group: i for i, group in enumerate(LONGEST_FIRST)}
  items.sort(key=lambda item: rank.get(group_of(item), len(rank)))


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
