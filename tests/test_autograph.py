"""The code that runs inside tf.function converts with AutoGraph: a
function it cannot convert runs as-is, with a warning in every training
log that asks the user to report a TensorFlow bug."""

import importlib
import inspect
import pkgutil

import tensorflow as tf

# The modules whose functions the training step, the search and the
# exports trace (the readers, the CLI and the serving threads run eagerly).
TRACED = ("im2txt_ext.training", "im2txt_ext.models", "im2txt_ext.search",
          "im2txt_ext.decoding", "attention.soft_attention",
          "attention.hard_attention", "attention.cached_attention",
          "attention.show_attend_tell", "attention.transformer")


def _modules():
  for name in TRACED:
    module = importlib.import_module(name)
    yield module
    if hasattr(module, "__path__"):
      for info in pkgutil.walk_packages(module.__path__, name + "."):
        yield importlib.import_module(info.name)


def _functions(module):
  """The functions and methods written in ``module`` (not the ones a
  dataclass generates, which have no source to convert)."""
  for value in vars(module).values():
    if getattr(value, "__module__", None) != module.__name__:
      continue
    if inspect.isfunction(value):
      yield value
    elif inspect.isclass(value):
      yield from (member for member in vars(value).values()
                  if inspect.isfunction(member)
                  and member.__code__.co_filename == module.__file__)


def test_the_traced_modules_convert_with_autograph():
  failures = []
  count = 0
  for module in _modules():
    for function in _functions(module):
      count += 1
      try:
        tf.autograph.to_code(function)
      except Exception as e:  # pylint: disable=broad-except
        failures.append(f"{module.__name__}.{function.__qualname__}: "
                        f"{type(e).__name__}: {str(e)[:160]}")
  assert count > 100, count
  assert not failures, "\n".join(failures)
