"""Command-line tools (absl flags; ``--help`` explains every flag)."""

import sys

from absl import app

from im2txt_ext.errors import InputError


def run(main):
  """Runs an absl main; bad input is one line on stderr and exit status 2."""
  def guarded(argv):
    try:
      return main(argv)
    except InputError as e:
      print(f"error: {e}", file=sys.stderr)
      sys.exit(2)
  app.run(guarded)
