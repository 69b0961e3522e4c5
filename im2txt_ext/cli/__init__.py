"""Command-line tools (absl flags; ``--help`` explains every flag)."""

import os
import sys

from absl import app, logging

# TensorFlow's C++ start-up notices (oneDNN, CPU features) are not for users.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from im2txt_ext.errors import InputError


def run(main):
  """Runs an absl main; bad input is one line on stderr and exit status 2."""
  def guarded(argv):
    if not any(a.startswith(("--verbosity", "-v")) for a in sys.argv):
      logging.set_verbosity(logging.WARNING)  # TF's checkpoint INFO lines.
    try:
      return main(argv)
    except InputError as e:
      print(f"error: {e}", file=sys.stderr)
      sys.exit(2)
  app.run(guarded)
