"""The tour notebook runs top to bottom (with tiny settings)."""

import os

import pytest

from conftest import REPO

NOTEBOOK = REPO / "experiments" / "notebooks" / "tour.ipynb"


def test_tour_notebook_runs(tmp_path, monkeypatch):
  nbformat = pytest.importorskip("nbformat", reason="needs the test extra "
                                 "(pip install -e '.[test]')")
  nbclient = pytest.importorskip("nbclient", reason="needs the test extra")
  monkeypatch.setenv("TOUR_STEPS", "20")
  monkeypatch.setenv("TOUR_NUM_TRAIN", "64")
  monkeypatch.setenv("TOUR_DIR", str(tmp_path / "tour"))
  monkeypatch.setenv("PYTHONPATH", str(REPO) + os.pathsep +
                     os.environ.get("PYTHONPATH", ""))
  notebook = nbformat.read(str(NOTEBOOK), as_version=4)
  nbclient.NotebookClient(
      notebook, timeout=300, kernel_name="python3",
      resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()
  outputs = "".join(output.get("text", "") for cell in notebook.cells
                    if cell.cell_type == "code" for output in cell.outputs)
  assert "20 steps per model" in outputs
  assert "BLEU-4" in outputs and "soft_attention " in outputs
  assert (tmp_path / "tour" / "attention.png").read_bytes()[:4] == b"\x89PNG"
