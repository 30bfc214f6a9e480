"""BLAS_THREADS: a count is kept; 0 divides the CPUs among a worker's tasks."""

from __future__ import annotations

import os

import pytest
from threadpoolctl import threadpool_info

from spacer_worker.config import pool
from spacer_worker.exceptions import ConfigError
from spacer_worker.training.threads import blas_threads, thread_count


@pytest.fixture
def tasks_at_once():
    yield pool.set_tasks_at_once
    pool.set_tasks_at_once(1)


def test_auto_divides_the_cpus_among_the_tasks_run_at_once(tasks_at_once,
                                                           monkeypatch):
    monkeypatch.setenv('SPACER_BLAS_THREADS', '0')
    cpus = len(os.sched_getaffinity(0))
    assert thread_count() == cpus
    tasks_at_once(cpus)
    assert thread_count() == 1
    tasks_at_once(cpus * 4)  # never 0 threads
    assert thread_count() == 1


def test_a_configured_count_is_used_and_applied(monkeypatch):
    monkeypatch.setenv('SPACER_BLAS_THREADS', '1')
    assert thread_count() == 1
    with blas_threads():
        assert {i['num_threads'] for i in threadpool_info()
                if i['user_api'] == 'blas'} == {1}


def test_a_negative_count_names_the_setting(monkeypatch):
    monkeypatch.setenv('SPACER_BLAS_THREADS', '-2')
    with pytest.raises(ConfigError, match='BLAS_THREADS=-2'):
        thread_count()


def test_steps_give_numpys_blas_the_threads_and_adams_one():
    import numpy
    import scipy.linalg  # noqa: F401  (loads scipy's own OpenBLAS)

    from spacer_worker.training.threads import step_threads

    def blas_threads_by_home():
        return {os.path.basename(os.path.dirname(i['filepath'])):
                i['num_threads'] for i in threadpool_info()
                if i['user_api'] == 'blas'}

    before = blas_threads_by_home()
    numpy_home = os.path.basename(os.path.dirname(numpy.__file__)) + '.libs'
    with step_threads(2):
        during = blas_threads_by_home()
    assert blas_threads_by_home() == before  # restored
    if len(during) == 1:  # one BLAS for both: one pool, all threads
        assert set(during.values()) == {2}
        return
    # Two OpenBLAS pools awake at once spin against each other: only
    # NumPy's (the products) gets the threads, scipy's (Adam) one.
    assert during.pop(numpy_home) == 2
    assert set(during.values()) == {1}
