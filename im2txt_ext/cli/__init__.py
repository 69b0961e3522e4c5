"""Command-line tools (absl flags; ``--help`` explains every flag).

Each command defines its flags when it runs (its ``entry`` calls its
``define_flags`` before ``run``), never on import: the commands' flag names
overlap, and one process may import several of their modules."""

import os
import sys

from absl import app, flags, logging

# TensorFlow's C++ start-up notices (oneDNN, CPU features) are not for users.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from im2txt_ext.errors import InputError


def _show_in_help(module_name):
  """Makes --help show the command module's docstring and flags.

  absl's --help shows those of ``__main__`` only, which for an installed
  console script is a stub that imports the command's module.
  """
  if module_name == "__main__":  # python -m: the command's module itself.
    return
  for flag in flags.FLAGS.get_key_flags_for_module(module_name):
    flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)
  sys.modules["__main__"].__doc__ = sys.modules[module_name].__doc__


def _parse_flags(argv):
  """absl's flag parsing, with a bad or missing flag reported as bad input
  is: one ``error:`` line and exit status 2."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    print(f"error: {'; '.join(str(e).splitlines())} (see --help)",
          file=sys.stderr)
    sys.exit(2)


def run(main):
  """Runs an absl main; bad input is one line on stderr and exit status 2."""
  _show_in_help(main.__module__)

  def guarded(argv):
    if not any(a.startswith(("--verbosity", "-v")) for a in sys.argv):
      logging.set_verbosity(logging.WARNING)  # TF's checkpoint INFO lines.
    try:
      return main(argv)
    except (InputError, OSError) as e:
      if isinstance(e, OSError):  # A path it cannot read, write or create.
        if e.filename is None:
          raise
        in_the_way = isinstance(e, (FileExistsError, NotADirectoryError))
        e = InputError("a file is in the way of a folder there" if in_the_way
                       else e.strerror, e.filename)
      print(f"error: {e}", file=sys.stderr)
      # Nothing after the error line: TensorFlow warns at exit about the
      # objects a failed step left (e.g. a checkpoint half restored).
      logging.set_verbosity(logging.ERROR)
      sys.exit(2)
  app.run(guarded, flags_parser=_parse_flags)
