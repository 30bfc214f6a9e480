"""Chunks of a training gathered in their training order, a chunk ahead.

An MLP step reads a batch of 200 rows in a shuffled order; gathering them
(from the feature matrix, in RAM or in its cache file, then into that
order) is a quarter of a step's time, and the matrix read a few percent
more. None of it depends on the steps, only on the order, which is drawn
from a generator before each chunk: :class:`OrderedChunks` draws it and
gathers the rows on a second thread while the caller trains on the
previous chunk (reads and copies release the GIL), so the steps do not
wait for memory, not even at the start of an epoch: the next epoch's
first chunk is gathered while the last one of this epoch trains. Two
output buffers, made once per training, take turns.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np

Segments = list[tuple[int, int]]
DrawOrder = Callable[[int], np.ndarray]
_END_OF_EPOCH = object()
STAGING_ROWS = 512  # 2.5 MB of 1280-dim rows: stays in cache while copied out
_STOP = object()


class OrderedChunks:
    """Gathers the epochs handed to :meth:`add_epoch`, in turn; iterate
    :meth:`next_epoch` for each one's ``(rows, labels)`` chunks, each in
    the order its ``draw_order(len(chunk))`` gives. A context manager."""

    def __init__(self, matrix: Any, labels: np.ndarray, base: int,
                 rows: int):
        self._matrix = matrix
        self._labels = labels
        self._base = base
        # A matrix in RAM is gathered from directly; one in a file is read
        # a few hundred rows at a time into a staging block that stays in
        # cache, and each row copied from there to its place in the order.
        self._staging = (np.empty((min(rows, STAGING_ROWS), matrix.dim),
                                  dtype=np.float32)
                         if matrix.on_disk else None)
        self._free: queue.Queue = queue.Queue()
        for _ in range(2):
            self._free.put(np.empty((rows, matrix.dim), dtype=np.float32))
        self._epochs: queue.Queue = queue.Queue()
        self._ready: queue.Queue = queue.Queue()
        self._stop = threading.Event()
        self._in_use: np.ndarray | None = None
        self._thread = threading.Thread(target=self._produce, daemon=True,
                                        name='spacer-chunks')
        self._thread.start()

    def add_epoch(self, chunks: Iterable[Segments],
                  draw_order: DrawOrder) -> None:
        """Queue an epoch: its chunks' row segments, and the draw giving
        each chunk's order (called in chunk order, on the producer's
        thread, and by nothing else meanwhile)."""
        self._epochs.put((chunks, draw_order))

    def next_epoch(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """The chunks of the next queued epoch; each is valid until the
        next one is asked for."""
        while True:
            if self._in_use is not None:
                self._free.put(self._in_use)
                self._in_use = None
            item = self._ready.get()
            if item is _END_OF_EPOCH:
                return
            if isinstance(item, BaseException):
                raise item
            x, y, self._in_use = item
            yield x, y

    def _produce(self) -> None:
        try:
            while True:
                job = self._epochs.get()
                if job is _STOP or self._stop.is_set():
                    return
                chunks, draw_order = job
                for segments in chunks:
                    buffer = self._free.get()
                    if self._stop.is_set():
                        return
                    self._ready.put(self._gather(segments, draw_order,
                                                 buffer))
                self._ready.put(_END_OF_EPOCH)
        except BaseException as e:  # handed to the consumer
            self._ready.put(e)

    def _gather(self, segments: Segments, draw_order: DrawOrder,
                buffer: np.ndarray) -> tuple[np.ndarray, np.ndarray,
                                             np.ndarray]:
        rows = np.concatenate([np.arange(s, s + n) for s, n in segments])
        order = draw_order(len(rows))
        out = buffer[:len(rows)]
        if self._staging is None:
            np.take(self._matrix.array, rows[order], axis=0, out=out)
        else:
            # Where each row, in segment order, goes: out[place[i]] is the
            # i-th row read (order's inverse).
            place = np.empty_like(order)
            place[order] = np.arange(len(order))
            done = 0
            for start, count in segments:
                for first in range(0, count, len(self._staging)):
                    n = min(len(self._staging), count - first)
                    block = self._matrix.read(start + first,
                                              start + first + n,
                                              out=self._staging)
                    out[place[done:done + n]] = block
                    done += n
        return out, self._labels[rows[order] - self._base], buffer

    def close(self) -> None:
        """Stop the producer and wait for it (it draws nothing more)."""
        self._stop.set()
        self._epochs.put(_STOP)
        self._free.put(np.empty((0, 0), dtype=np.float32))
        self._thread.join()
        # Let the buffers go now: calibration and validation come next and
        # should not stack their arrays on top of them (peak RSS).
        self._staging = self._in_use = None
        for pending in (self._free, self._ready):
            while not pending.empty():
                pending.get_nowait()

    def __enter__(self) -> OrderedChunks:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
