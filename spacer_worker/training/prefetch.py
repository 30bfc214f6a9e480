"""Chunks of an epoch gathered in their training order, a chunk ahead.

An MLP step reads a batch of 200 rows in a shuffled order; gathering them
(from the feature matrix, in RAM or in its cache file, then into that
order) is a quarter of a step's time, and the matrix read a few percent
more. None of it depends on the steps, only on the order, which is drawn
from the classifier's generator before each chunk: :class:`OrderedChunks`
draws it and gathers the rows on a second thread while the caller trains
on the previous chunk (reads and copies release the GIL), so the steps
never wait for memory. Two output buffers take turns; nothing else is
drawn from the generator while the epoch runs.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np

Segments = list[tuple[int, int]]
_DONE = object()


class OrderedChunks:
    """Iterate ``(rows, labels)`` per chunk, each already in the order
    ``draw_order(len(chunk))`` gives; use as a context manager."""

    def __init__(self, matrix: Any, labels: np.ndarray, base: int,
                 chunks: Iterable[Segments],
                 draw_order: Callable[[int], np.ndarray], rows: int):
        self._matrix = matrix
        self._labels = labels
        self._base = base
        self._chunks = chunks
        self._draw_order = draw_order
        # A matrix in RAM is gathered from directly; one in a file is read
        # a chunk at a time into staging first.
        self._staging = (np.empty((rows, matrix.dim), dtype=np.float32)
                         if matrix.on_disk else None)
        self._free: queue.Queue = queue.Queue()
        for _ in range(2):
            self._free.put(np.empty((rows, matrix.dim), dtype=np.float32))
        self._ready: queue.Queue = queue.Queue()
        self._stop = threading.Event()
        self._in_use: np.ndarray | None = None
        self._thread = threading.Thread(target=self._produce, daemon=True,
                                        name='spacer-chunks')
        self._thread.start()

    def _produce(self) -> None:
        try:
            for segments in self._chunks:
                buffer = self._free.get()
                if self._stop.is_set():
                    return
                rows = np.concatenate([np.arange(s, s + n)
                                       for s, n in segments])
                order = self._draw_order(len(rows))
                out = buffer[:len(rows)]
                if self._staging is None:
                    np.take(self._matrix.array, rows[order], axis=0, out=out)
                else:
                    x = self._matrix.gather(segments, out=self._staging)
                    np.take(x, order, axis=0, out=out)
                self._ready.put((out, self._labels[rows[order] - self._base],
                                 buffer))
            self._ready.put(_DONE)
        except BaseException as e:  # handed to the consumer
            self._ready.put(e)

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        while True:
            if self._in_use is not None:
                self._free.put(self._in_use)
                self._in_use = None
            item = self._ready.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            x, y, self._in_use = item
            yield x, y

    def close(self) -> None:
        """Stop the producer and wait for it (it draws nothing more)."""
        self._stop.set()
        self._free.put(np.empty((0, 0), dtype=np.float32))
        self._thread.join()

    def __enter__(self) -> OrderedChunks:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
