"""Float64 recomputation of the patches float32 cannot carry.

Where a patch drives EfficientNet far outside the range its batch norms
were set for (black-and-white or saturated content: features in the
hundreds or thousands where ordinary patches give ~1), the network
amplifies every float32 rounding thousands-fold. The features then
differ from a float64 run by ~1e-3 relative, by an amount that is
effectively random: on a bilevel test image (features up to 7948)
PySpacer 0.14's own float32 error is 19 with one thread and 13 with two,
and the same network under PyTorch 2.13 gives 8 and 108. No float32
summation order is reliably as accurate as PySpacer's there, so those
patches are run again in float64 (PySpacer's network unfolded, as its
float64 run defines the truth; in numpy, :mod:`.numpy_net`, on every
backend, so a worker with or without torch gives the same bits) and
rounded to float32 once. On a 2-core CPU such a patch takes ~110 ms
against 4.9 ms for a float32 one through ONNX Runtime (~20x). Ordinary
patches stay below
``EXTRACT_FLOAT64_ABOVE`` (default ``LARGE_FEATURE``) and pay only the
check, a max over their features.

A patch of one colour (a white or black image, 16-bit grey clipped to
white, an overexposed area) takes it too, with any threshold but 0. Its
maps are constant, so every output pixel rounds the same way and no mean
averages the rounding out: on such a patch ONNX Runtime's blocked
kernels drifted to 4.9e-4 from float64 (features up to 52) where
PySpacer's drifted to 1.9e-4, outside the fidelity rule. Its features
depend only on the colour, so each colour runs once per network (a blank
image costs one float64 patch, not one per point).

Rows that are not finite (a float32 or fp16 overflow) take the same path
whatever the threshold, fp16 and ``EXTRACT_FLOAT64_ABOVE=0`` included: a
feature file must never hold NaN or infinity. Should float64 overflow too,
:class:`NonFiniteFeaturesError` fails the task before anything is written.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Mapping

import numpy as np

from spacer_worker.exceptions import NonFiniteFeaturesError
from spacer_worker.extractors.runtime.numpy_net import NumpyEfficientNet

logger = logging.getLogger(__name__)

# The default of EXTRACT_FLOAT64_ABOVE. Ordinary patches give features of
# ~1 (calibrated test weights) to ~10; at 266 (saturated content) float32
# results already differ by 5e-4 to 1e-3 between implementations, 5-10x
# the 1e-4 agreement of the fidelity rule. Set far above ordinary features
# so that the float64 path stays rare; a worker logs the first time a
# network takes it.
LARGE_FEATURE = 100.0
# Colours whose float64 features a network keeps (1280 floats each).
MAX_CACHED_COLOURS = 64


def uniform_colour(patch: np.ndarray) -> tuple[int, int, int] | None:
    """The (R, G, B) of a [224, 224, 3 or 4] uint8 patch whose pixels are
    all that colour (a 4th, padding channel ignored), else None."""
    first = patch[0, 0, :3]
    # Nearly every photo patch differs within its first row: a 2 KB check.
    if not (patch[0, :, :3] == first).all():
        return None
    if not (patch[..., :3] == first).all():
        return None
    return int(first[0]), int(first[1]), int(first[2])


class ExactFallback:
    """Float64 features for the rows of a batch whose float32 ones are
    too large (above ``above``; ``math.inf``: none) or not finite."""

    # Patches run in float64 at once (each takes ~10 MB per activation).
    CHUNK = 4

    def __init__(self, state: Mapping[str, np.ndarray],
                 above: float = LARGE_FEATURE):
        # A conformed state (folded.conformed_state): float32 parameters.
        self._state = state
        self.above = above
        self._net: NumpyEfficientNet | None = None
        self._lock = threading.Lock()
        self.patches = 0  # recomputed so far
        self._colours: dict[tuple[int, int, int], np.ndarray] = {}

    def _network(self) -> NumpyEfficientNet:
        # Built on first need: most workers never see such a patch, and
        # the float64 copy is 31 MB (the classifier layer left out).
        with self._lock:
            if self._net is None:
                self._net = NumpyEfficientNet(self._state, np.float64)
            return self._net

    def refine(self, patches: np.ndarray, features: np.ndarray) -> int:
        """Overwrite the rows of ``features`` ([b, 1280] float32) that need
        float64 with features of ``patches`` ([b, 224, 224, 3] uint8, or
        4 channels whose last is ignored) computed in float64; return how
        many."""
        peak = np.abs(features).max(axis=1)  # NaN stays NaN: not fine
        fine = np.isfinite(peak) & (peak <= self.above)
        colours = {}
        if math.isfinite(self.above):
            for i in range(len(patches)):
                colour = uniform_colour(patches[i])
                if colour is not None:
                    colours[i] = colour
                    fine[i] = True  # taken care of below, by colour
        rows = np.flatnonzero(~fine)
        if rows.size == 0 and not colours:
            return 0
        for i, colour in colours.items():
            features[i] = self._colour_features(patches[i], colour)
        if rows.size:
            features[rows] = self._float64(patches[rows], len(features))
        self._log(rows.size, len(colours), len(features))
        return int(rows.size) + len(colours)

    def _colour_features(self, patch: np.ndarray,
                         colour: tuple[int, int, int]) -> np.ndarray:
        with self._lock:
            known = self._colours.get(colour)
        if known is None:
            known = self._float64(patch[None], 1)[0]
            with self._lock:
                if len(self._colours) >= MAX_CACHED_COLOURS:
                    self._colours.pop(next(iter(self._colours)))
                self._colours[colour] = known
        return known

    def _float64(self, patches: np.ndarray, batch: int) -> np.ndarray:
        net = self._network()
        exact = np.concatenate([
            net.features(patches[start:start + self.CHUNK])
            for start in range(0, len(patches), self.CHUNK)])
        with np.errstate(over='ignore'):  # beyond float32: inf, refused below
            exact = exact.astype(np.float32)
        if not np.isfinite(exact).all():
            broken = int((~np.isfinite(exact).all(axis=1)).sum())
            raise NonFiniteFeaturesError(
                f"{broken} of {batch} patches give NaN or infinite "
                f"features even in float64: these extractor weights drive "
                f"EfficientNet out of range on them (check the weights "
                f"file). Nothing was written.")
        return exact

    def _log(self, large: int, uniform: int, batch: int) -> None:
        with self._lock:
            first = self.patches == 0
            self.patches += large + uniform
        whys = []
        if large:
            whys.append(
                f'{large} not finite (an overflow)'
                if math.isinf(self.above) else
                f'{large} not finite or above {self.above:g}, where float32 '
                f'rounding grows past PySpacer\'s (ordinary patches stay '
                f'far below; each costs ~13x more)')
        if uniform:
            whys.append(f'{uniform} of one colour (constant maps round alike '
                        f'everywhere; once per colour)')
        logger.log(logging.INFO if first else logging.DEBUG,
                   '%d of %d patches recomputed in float64: %s.',
                   large + uniform, batch, '; '.join(whys))
