"""Stopping a training cleanly on SIGTERM or Ctrl-C.

Preemptible machines, batch schedulers and ``kill`` send SIGTERM some time
before they kill; a user stops a run with Ctrl-C (SIGINT). Either one asks
the training loop to finish its step, save a checkpoint of it and stop
(``TrainingStopped``), so a resume loses no step. After that a second
Ctrl-C interrupts at once (KeyboardInterrupt), as usual; a second SIGTERM
changes nothing (a process group's and a parent's may both arrive; what
cannot wait sends SIGKILL).
"""

import signal
import threading

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class TrainingStopped(Exception):
  """A training stopped by ``signal_name`` after saving ``step``."""

  def __init__(self, signal_number, step, run_dir):
    self.signal_name = signal.Signals(signal_number).name
    self.exit_status = 128 + signal_number  # A shell's for that signal.
    self.step = step
    super().__init__(f"stopped by {self.signal_name} at step {step}, "
                     f"saved in {run_dir}; the same command resumes it")


class StopRequests:
  """A context in which SIGTERM and SIGINT set ``received`` (the first
  signal's number; None before) instead of ending the process.

  Signal handlers belong to the main thread: elsewhere (a training run in a
  thread of its own) the context changes nothing and ``received`` stays
  None. The handlers before it are back on exit, SIGINT's also after the
  first signal.
  """

  def __init__(self):
    self.received = None
    self._before = {}

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      self._before = {number: signal.signal(number, self._handle)
                      for number in SIGNALS}
    return self

  def _handle(self, number, frame):
    del frame
    if self.received is None:
      self.received = number
    self._restore(signal.SIGINT)

  def _restore(self, *numbers):
    """Puts back the handlers of ``numbers`` (default: all) from before."""
    for number in numbers or list(self._before):
      if number in self._before:
        handler = self._before.pop(number)  # None: one set outside Python.
        signal.signal(number, signal.SIG_DFL if handler is None else handler)

  def __exit__(self, *exc_info):
    self._restore()
