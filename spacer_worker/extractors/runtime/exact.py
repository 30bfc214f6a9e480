"""Float64 recomputation of the patches float32 cannot carry.

Where a patch drives EfficientNet far outside the range its batch norms
were set for (black-and-white or saturated content: features in the
hundreds or thousands where ordinary patches give ~1), the network
amplifies every float32 rounding thousands-fold. The features then
differ from a float64 run by ~1e-3 relative, by an amount that is
effectively random: on a bilevel test image (features up to 7948)
PySpacer 0.14's own float32 error is 19 with one thread and 13 with two,
and the same network under PyTorch 2.13 gives 8 and 108. No float32 summation order is reliably as
accurate as PySpacer's there, so those patches are run again in float64
(PySpacer's network unfolded, as its float64 run defines the truth) and
rounded to float32 once: ~4x the time of a float32 patch on CPU.
Ordinary patches stay below ``EXTRACT_FLOAT64_ABOVE`` (default
``LARGE_FEATURE``) and pay only the check, a max over their features.
"""

from __future__ import annotations

import copy
import logging
import threading

import numpy as np
import torch

from spacer_worker.extractors.runtime.network import EfficientNetB0

logger = logging.getLogger(__name__)

# The default of EXTRACT_FLOAT64_ABOVE. Ordinary patches give features of
# ~1 (calibrated test weights) to ~10; at 266 (saturated content) float32
# results already differ by 5e-4 to 1e-3 between implementations, 5-10x
# the 1e-4 agreement of the fidelity rule. Set far above ordinary features
# so that the float64 path stays rare; a worker logs the first time a
# network takes it.
LARGE_FEATURE = 100.0


class ExactFallback:
    """Float64 features for the rows of a batch whose float32 ones are
    too large (or not finite) to be accurate."""

    def __init__(self, reference: EfficientNetB0, device: torch.device,
                 above: float = LARGE_FEATURE):
        self._reference = reference
        self.above = above
        self._device = device
        self._net: EfficientNetB0 | None = None
        self._lock = threading.Lock()
        self.patches = 0  # recomputed so far

    def _network(self) -> EfficientNetB0:
        # Built on first need: most workers never see such a patch, and
        # the float64 copy is 31 MB (43 with the unused classifier layer).
        with self._lock:
            if self._net is None:
                net = copy.deepcopy(self._reference)
                net._fc = torch.nn.Identity()  # classes: unused by features
                self._net = net.to(device=self._device,
                                   dtype=torch.float64).eval()
                self._net.requires_grad_(False)
            return self._net

    def refine(self, patches: np.ndarray, features: np.ndarray) -> int:
        """Overwrite the rows of ``features`` ([b, 1280] float32) that need
        float64 with features of ``patches`` ([b, 224, 224, 3] uint8)
        computed in float64; return how many."""
        fine = np.abs(features).max(axis=1) <= self.above  # NaN: not fine
        rows = np.flatnonzero(~fine)
        if rows.size == 0:
            return 0
        net = self._network()
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(patches[rows]))
            x = x.to(self._device).permute(0, 3, 1, 2).to(torch.float64)
            exact = net.features(x / 255).cpu().numpy()
        features[rows] = exact.astype(np.float32)
        with self._lock:
            first = self.patches == 0
            self.patches += int(rows.size)
        logger.log(logging.INFO if first else logging.DEBUG,
                   '%d of %d patches recomputed in float64: their features '
                   'exceed %g, where float32 rounding grows past PySpacer\'s '
                   '(ordinary patches stay far below; each costs ~4x).',
                   rows.size, len(features), self.above)
        return int(rows.size)
