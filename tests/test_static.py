"""Pyflakes over every Python file of the repository: no undefined name,
unused import or shadowed definition, also in the benchmarks and drivers
that the other tests run seldom or never (a misnamed variable in one
stays hidden until someone runs it)."""

import subprocess
import sys

from conftest import REPO

CHECKED = ("setup.py", "im2txt_ext", "attention", "embeddings", "experiments",
           "benchmarks", "tests")


def test_pyflakes_finds_nothing():
  result = subprocess.run([sys.executable, "-m", "flake8", *CHECKED],
                          cwd=REPO, capture_output=True, text=True,
                          timeout=300)
  assert result.returncode == 0, result.stdout + result.stderr
  assert not result.stdout
