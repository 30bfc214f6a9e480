"""What ``EfficientNetExtractor.__call__`` runs in a worker."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from spacer_worker.data_classes import ImageFeatures
from spacer_worker.data_classes.results import ExtractFeaturesReturnMsg
from spacer_worker.extractors.checks import check_extract_inputs
from spacer_worker.extractors.runtime import shared

if TYPE_CHECKING:
    from PIL.Image import Image

    from spacer_worker.extractors.runtime.weights import ExtractorFiles


def run_efficientnet(extractor: ExtractorFiles, im: Image,
                     rowcols: Sequence[tuple[int, int]]
                     ) -> tuple[ImageFeatures, ExtractFeaturesReturnMsg]:
    """Features of ``im`` at ``rowcols`` (PySpacer's numbers, within 1e-4).

    The network comes from the process cache (built on first use); points
    are checked first, so a bad point is a RowColumnInvalidError, not a
    wrong patch.
    """
    start = time.time()
    check_extract_inputs(im, rowcols)
    rowcols = [tuple(rc) for rc in rowcols]
    if shared.server_configured():
        # The worker's shared server runs the network; torch never loads.
        network, loaded_remotely = shared.remote_network(extractor)
    else:
        from spacer_worker.extractors.runtime import engine
        network, loaded_remotely = engine.get_network(extractor)
    feat = network.extract(im, rowcols)
    features = ImageFeatures.from_arrays(
        [int(r) for r, _ in rowcols], [int(c) for _, c in rowcols], feat,
        valid_rowcol=True)
    return features, ExtractFeaturesReturnMsg(
        extractor_loaded_remotely=loaded_remotely,
        runtime=time.time() - start)
