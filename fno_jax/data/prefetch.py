"""Background prefetching of batches: a worker thread fills a bounded queue ahead of the consumer.

Reading a batch (tensorstore decode, numpy gathers) and the host->device copy overlap the training
step that consumes the previous batch. Exceptions raised by the worker reach the consumer at the
batch where they happened; `close()` (or leaving a `with` block) stops the worker cleanly.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Generic, TypeVar

T = TypeVar("T")

_END = object()


class _Failure:
    def __init__(self, error: BaseException) -> None:
        self.error = error


class Prefetcher(Generic[T], Iterator[T]):
    """Iterates `fetch(i)` for i in `indices`, computed up to `buffer_size` ahead in a thread.

    Args:
      fetch: index -> batch (any pytree, typically a dict of host numpy arrays).
      indices: the indices to fetch, in order (any iterable, may be infinite: itertools.count()).
      buffer_size: how many batches may wait ready in the queue (2-4 is plenty). `fetch` may
        place the batch on the devices itself, so that the copy overlaps the consumer's work too.
    """

    def __init__(
        self,
        fetch: Callable[[int], T],
        indices: Iterable[int],
        *,
        buffer_size: int = 2,
    ) -> None:
        if buffer_size < 1:
            raise ValueError(f"buffer_size must be >= 1, got {buffer_size}")
        self._fetch = fetch
        self._indices = indices
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=buffer_size)
        self._stop = threading.Event()
        self._finished = False
        self._thread = threading.Thread(target=self._work, name="fno-jax-prefetch", daemon=True)
        self._thread.start()

    def _put(self, item: Any) -> bool:
        # Poll the stop flag so a full queue never blocks a closing worker forever.
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def _work(self) -> None:
        try:
            for i in self._indices:
                if self._stop.is_set():
                    return
                batch = self._fetch(i)
                if not self._put(batch):
                    return
        except BaseException as e:  # noqa: BLE001 - every failure must reach the consumer
            self._put(_Failure(e))
            return
        self._put(_END)

    def __iter__(self) -> Prefetcher[T]:
        return self

    def __next__(self) -> T:
        if self._finished:
            raise StopIteration
        item = self._queue.get()
        if item is _END:
            self._finished = True
            self._thread.join()
            raise StopIteration
        if isinstance(item, _Failure):
            self.close()
            raise item.error
        return item

    def close(self) -> None:
        """Stops the worker and drops prefetched batches; safe to call more than once."""
        self._finished = True
        self._stop.set()
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        self._thread.join()

    def __enter__(self) -> Prefetcher[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        stop = getattr(self, "_stop", None)
        if stop is not None:
            stop.set()
