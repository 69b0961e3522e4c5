"""Dynamic batching: concurrent calls gathered into one call of a function.

  batcher = Batcher(run_batch, max_batch=8, timeout_s=0.01)
  result = batcher.submit(key, item).result()   # From any thread.
  batcher.close()

One worker thread takes the oldest waiting request and the others with the
same key (requests with different keys are never mixed), waiting at most
``timeout_s`` after that request arrived for ``max_batch`` of them, and
calls ``run_batch(key, items)`` once for them all. A batch that raises is
run again one item at a time, so that a bad item fails only its own request.
"""

import concurrent.futures
import threading
import time


class Batcher:
  """Gathers ``submit``s into calls of ``run_batch(key, items)``, which
  returns one result per item, in order.

  Args:
    run_batch: callable(key, list of items) -> list of results.
    max_batch: int. Most items in one call.
    timeout_s: float. Longest wait for more items after the first arrived.
  """

  def __init__(self, run_batch, max_batch, timeout_s):
    if max_batch < 1:
      raise ValueError(f"max_batch must be at least 1, got {max_batch}")
    self.max_batch, self.timeout_s = max_batch, timeout_s
    self.batches = self.items = 0  # Calls of run_batch and their items.
    self._run_batch = run_batch
    self._waiting = []  # [key, item, future, arrival time], oldest first.
    self._changed = threading.Condition()
    self._closed = False
    self._worker = threading.Thread(target=self._work, name="batcher",
                                    daemon=True)
    self._worker.start()

  def submit(self, key, item):
    """Queues ``item``; returns a Future of its result. ``key``: hashable,
    equal for the items that may share a call."""
    future = concurrent.futures.Future()
    with self._changed:
      if self._closed:
        raise RuntimeError("the batcher is closed")
      self._waiting.append((key, item, future, time.monotonic()))
      self._changed.notify()
    return future

  def close(self):
    """Refuses new items, finishes those queued and stops the worker."""
    with self._changed:
      self._closed = True
      self._changed.notify()
    self._worker.join()

  def _next_batch(self):
    """The oldest request's key and its batch, once it is full or the
    oldest request has waited ``timeout_s``; None once closed and empty."""
    with self._changed:
      while not self._waiting and not self._closed:
        self._changed.wait()
      if not self._waiting:
        return None
      key, _, _, arrived = self._waiting[0]
      deadline = arrived + self.timeout_s
      while True:
        batch = [entry for entry in self._waiting if entry[0] == key]
        left = deadline - time.monotonic()
        if len(batch) >= self.max_batch or left <= 0 or self._closed:
          break
        self._changed.wait(left)
      batch = batch[:self.max_batch]
      taken = set(map(id, batch))
      self._waiting = [entry for entry in self._waiting
                       if id(entry) not in taken]
      return key, batch

  def _work(self):
    while (next_batch := self._next_batch()) is not None:
      self._run(*next_batch)

  def _run(self, key, batch):
    """Calls run_batch for ``batch``; on an error, each item alone."""
    self.batches += 1
    self.items += len(batch)
    try:
      results = self._run_batch(key, [item for _, item, _, _ in batch])
    except Exception as e:  # pylint: disable=broad-except
      if len(batch) == 1:
        batch[0][2].set_exception(e)
        return
      for entry in batch:
        self._run(key, [entry])
      return
    for (_, _, future, _), result in zip(batch, results):
      future.set_result(result)
