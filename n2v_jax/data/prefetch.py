"""Batches prepared ahead by a background thread (streaming training)."""

import queue
import threading
import weakref
from typing import Any, Callable

PREFETCH_BATCHES = 2  # batches prepared ahead by the background reader


def _produce(make: Callable[[int], Any], first: int, last: int, q: queue.Queue,
             stop: threading.Event) -> None:
  for i in range(first, last):
    try:
      item = make(i)
    except BaseException as e:  # handed over: the training loop raises it
      item = e
    while not stop.is_set():
      try:
        q.put((i, item), timeout=0.1)
        break
      except queue.Full:
        continue
    if stop.is_set() or isinstance(item, BaseException):
      return


class Prefetcher:
  """make(first), make(first + 1), ... computed by one background thread, at most `depth`
  ahead, handed out in order; the thread stops at close() or when this is collected."""

  def __init__(self, make: Callable[[int], Any], first: int, last: int,
               depth: int = PREFETCH_BATCHES):
    self._queue: queue.Queue = queue.Queue(maxsize=depth)
    self._stop = threading.Event()
    self._next = first
    # The thread holds no reference to self, so an abandoned loop still ends it.
    self._thread = threading.Thread(target=_produce, daemon=True, name="n2v-prefetch",
                                    args=(make, first, last, self._queue, self._stop))
    self._thread.start()
    weakref.finalize(self, self._stop.set)

  def get(self) -> Any:
    i, item = self._queue.get()
    if isinstance(item, BaseException):
      raise item
    assert i == self._next, (i, self._next)
    self._next += 1
    return item

  def close(self) -> None:
    self._stop.set()
    self._thread.join()
