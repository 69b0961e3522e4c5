"""Errors that users see as one clear line, never a deep stack trace."""


class InputError(ValueError):
  """Bad user input: a file, a line or an argument that cannot be used.

  The message names the file (and line, where there is one) and what is wrong.
  Command-line tools print it as one line and exit with status 2.
  """

  def __init__(self, message, path=None, line=None):
    where = ""
    if path is not None:
      where = str(path) + (f":{line}" if line is not None else "") + ": "
    super().__init__(where + message)
    self.path = path
    self.line = line
