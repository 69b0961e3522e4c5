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


def graph_error_line(message):
  """The readable line of a TensorFlow error: an assertion's text, else the
  op's own message (the line above its "[[{{node ...}}]]" line, e.g.
  "Invalid JPEG data, size 300"), not the "Graph execution error:" head."""
  lines = [line.strip() for line in message.splitlines()]
  for line in lines:
    if "assertion failed:" in line:
      return line.split("assertion failed:", 1)[1].strip(" []")
  for above, line in zip(lines, lines[1:]):
    if line.startswith("[[") and above:
      return f"cannot decode the image: {above}"
  return "cannot caption this image"
