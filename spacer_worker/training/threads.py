"""BLAS thread limits for training and scoring (BLAS_THREADS setting).

A worker running one task per core must give each task one BLAS thread:
threads that spin while another process holds the core make an
oversubscribed worker several times slower. A task with cores to itself
should use them: a second thread makes the 200 x 1280 x 200 mini-batch
products of an MLP training ~1.7x faster (95 -> 166 GFLOP/s here), the
whole training ~1.4x. So by default (0) a task gets the CPUs divided by
the tasks its worker runs at once (``spacer_worker.config.pool``), and every CPU
outside a worker.

Inside an MLP's mini-batch steps (:func:`step_threads`) only NumPy's BLAS
gets those threads: its two large products per step (200 x 1280 x 100)
take 0.46 ms on two threads against 0.83 on one. The Adam updates call
scipy's BLAS, a second OpenBLAS with its own thread pool; it keeps one
thread, because two pools awake at once spin against each other (the
benchmark's training took 35 s instead of 3.7 with both at two).
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from threadpoolctl import ThreadpoolController

from spacer_worker import config
from spacer_worker.config.pool import tasks_at_once
from spacer_worker.exceptions import ConfigError

_lock = threading.Lock()
_controller: Any = None
_step_pools: tuple[Any, Any] | None = None


def thread_count() -> int:
    """BLAS threads for one task: BLAS_THREADS, or with 0 the CPUs this
    process may use divided among the worker's tasks (at least 1)."""
    configured = config.get('BLAS_THREADS')
    if configured < 0:
        raise ConfigError(f'BLAS_THREADS={configured}: expected 0 (CPUs '
                          f'shared among the tasks a worker runs at once) '
                          f'or a positive count.')
    if configured:
        return configured
    return max(1, len(os.sched_getaffinity(0)) // tasks_at_once())


def _get_controller() -> Any:
    # Inspecting the loaded libraries takes ~0.5 ms; do it once per
    # process (after numpy/scipy are loaded, which is all that matters).
    # scipy's own OpenBLAS, which the MLP steps' Adam runs on, must be
    # loaded by then for step_threads to hold it to one thread.
    import scipy.linalg.blas  # noqa: F401
    global _controller
    with _lock:
        if _controller is None:
            _controller = ThreadpoolController()
        return _controller


@contextlib.contextmanager
def blas_threads(count: int | None = None) -> Iterator[None]:
    """Run the block with at most ``count`` BLAS threads (default
    ``thread_count()``; training.mlp_steps asks for 1 and says why)."""
    limit = thread_count() if count is None else count
    pools = _blas_pools()
    if all(lib.num_threads == limit for lib in pools.lib_controllers):
        # Already so (a classify worker's every call): threadpoolctl's
        # limit() would copy its controller and set and restore each pool,
        # ~0.2 ms of a 4 ms scoring.
        yield
        return
    with pools.limit(limits=limit):
        yield


_blas: Any = None


def _blas_pools() -> Any:
    global _blas
    controller = _get_controller()
    with _lock:
        if _blas is None:
            _blas = controller.select(user_api='blas')
        return _blas


@contextlib.contextmanager
def step_threads(count: int | None = None) -> Iterator[None]:
    """NumPy's BLAS at ``count`` threads (default ``thread_count()``),
    every other BLAS at one, for the block. Where NumPy's BLAS cannot be
    told apart from the others, all run on one thread."""
    numpy_pool, other_pools = _split_pools()
    limit = thread_count() if count is None else count
    if not numpy_pool.lib_controllers:
        limit = 1
    with numpy_pool.limit(limits=limit), other_pools.limit(limits=1):
        yield


def numpy_blas_architecture() -> str:
    """The kernel family NumPy's BLAS runs (OpenBLAS's core type, such as
    'SkylakeX' or 'Haswell'; fixed when it loads), lower case; '' when
    unknown."""
    numpy_pool, _ = _split_pools()
    for info in numpy_pool.info():
        if info.get('architecture'):
            return str(info['architecture']).lower()
    return ''


def _split_pools() -> tuple[Any, Any]:
    """(NumPy's BLAS, every other BLAS) as threadpoolctl controllers, found
    once per process."""
    global _step_pools
    if _step_pools is None:
        blas = _get_controller().select(user_api='blas')
        paths = [c.filepath for c in blas.lib_controllers]
        # One library, one pool: nothing to fight.
        own = paths if len(paths) == 1 else \
            [p for p in paths if _belongs_to_numpy(p)]
        _step_pools = (blas.select(filepath=own),
                       blas.select(filepath=[p for p in paths
                                             if p not in own]))
    return _step_pools


def _belongs_to_numpy(filepath: str) -> bool:
    # A wheel's NumPy loads its BLAS from numpy.libs beside the package
    # (or from inside it); anything else (scipy.libs, a system library)
    # may be another library's too.
    import numpy
    package = Path(numpy.__file__).resolve().parent
    home = Path(filepath).resolve().parent
    return home in (package.with_name('numpy.libs'), package) \
        or package in home.parents
