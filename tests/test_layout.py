"""The package layout: imports run one way (read from the source, no
TensorFlow needed)."""

import ast
import pathlib

from conftest import REPO


def _imports(path):
  """The modules a source file imports (``from a import b`` gives a and
  a.b), at any depth."""
  names = set()
  for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
    if isinstance(node, ast.Import):
      names.update(alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom) and node.module:
      names.add(node.module)
      names.update(f"{node.module}.{alias.name}" for alias in node.names)
  return names


def _modules(folder):
  return sorted(pathlib.Path(REPO, folder).rglob("*.py"))


def test_the_core_never_imports_the_packages_built_on_it():
  for path in _modules("im2txt_ext"):
    reaching = {name for name in _imports(path)
                if name.split(".")[0] in ("attention", "embeddings",
                                          "experiments")
                or name in ("importlib", "importlib.import_module")}
    # Decoders outside the core are named by import path in one place
    # (optional packages are found with importlib.util, which is fine).
    allowed = {"im2txt_ext/models/__init__.py": {"importlib"}}
    assert reaching <= allowed.get(
        str(path.relative_to(REPO)), set()), (path, reaching)


def test_inference_and_training_do_not_import_each_other():
  inference = _imports(pathlib.Path(REPO, "im2txt_ext", "inference.py"))
  assert not any(name.startswith("im2txt_ext.training")
                 for name in inference)
  evaluate = _imports(pathlib.Path(REPO, "im2txt_ext", "cli",
                                   "evaluate.py"))
  assert "im2txt_ext.training.trainer" not in evaluate
