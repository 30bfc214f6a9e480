"""BLAS thread limits for training and scoring (BLAS_THREADS setting).

The matrices here are small (mini-batches of 200 rows, 200-point images),
too small for BLAS threads to pay off, and threads that spin while another
process holds the core make an oversubscribed worker several times slower.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

from threadpoolctl import ThreadpoolController

from spacer_worker import config

_lock = threading.Lock()
_controller: Any = None


def _get_controller() -> Any:
    # Inspecting the loaded libraries takes ~0.5 ms; do it once per
    # process (after numpy/scipy are loaded, which is all that matters).
    global _controller
    with _lock:
        if _controller is None:
            _controller = ThreadpoolController()
        return _controller


@contextlib.contextmanager
def blas_threads() -> Iterator[None]:
    """Run the block with at most BLAS_THREADS BLAS threads (0: as is)."""
    threads = config.get('BLAS_THREADS')
    if threads <= 0:
        yield
        return
    with _get_controller().limit(limits=threads, user_api='blas'):
        yield
