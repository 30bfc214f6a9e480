"""The network cache reports its hits and misses to the worker metrics."""

from __future__ import annotations

import os

import pytest

from spacer_worker.extractors.runtime import engine
from spacer_worker.metrics import recording
from spacer_worker.metrics.host import HostCollector, worker_directory


@pytest.fixture
def recorded(tmp_path):
    """Metrics recorded in this process, as a worker does; undone after."""
    from prometheus_client import values
    before = os.environ.get('PROMETHEUS_MULTIPROC_DIR')
    base = tmp_path / 'metrics'
    recording.enable(worker_directory(str(base), 'test'))
    yield HostCollector(str(base))
    recording.disable()
    if before is None:
        os.environ.pop('PROMETHEUS_MULTIPROC_DIR', None)
    else:
        os.environ['PROMETHEUS_MULTIPROC_DIR'] = before
    values.ValueClass = values.get_value_class()


def lookups(collector) -> dict:
    return {(s.labels['cache'], s.labels['result']): s.value
            for family in collector.collect()
            if family.name == 'spacer_cache_requests'
            for s in family.samples}


def test_a_network_built_once_is_a_miss_then_hits(weights, recorded):
    extractor = weights.extractor()
    for _ in range(3):
        engine.get_network(extractor)

    assert lookups(recorded) == {('network', 'miss'): 1.0,
                                 ('network', 'hit'): 2.0}
