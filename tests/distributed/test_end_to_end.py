"""Extract -> train -> classify through Redis on real images with calibrated
EfficientNet weights, the network preloaded in the extraction worker's pool
process (PRELOAD_EXTRACTOR)."""

from __future__ import annotations

import json

from spacer_worker.cli.demo import make_data, run_pipeline
from spacer_worker.client.jobs import Client


def test_pipeline_through_redis_on_real_images(app, start_worker, tmp_path):
    # Given textured images of 4 classes and weights calibrated on them
    data = make_data(tmp_path / 'demo', images=6, points=30, seed=1)
    preload = json.dumps(data.extractor.serialize())
    extract = start_worker('extract', queues='extract',
                           env={'SPACER_PRELOAD_EXTRACTOR': preload})
    start_worker('cpu', queues='train,classify')

    # When the whole pipeline runs through the queues
    timings: dict[str, float] = {}
    correct, scored = run_pipeline(Client(app), data, epochs=8,
                                   timings=timings, timeout=300)

    print(f'held-out accuracy {correct}/{scored}; timings {timings}')
    # Then the held-out points are classified well above chance (1/4)
    assert scored == 30
    assert correct / scored > 0.5, (correct, scored, timings)
    assert 'Extractor network preloaded in pool process' in extract.log_text()
