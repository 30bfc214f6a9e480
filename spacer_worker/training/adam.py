"""scikit-learn's Adam step, computed in place.

``MLPClassifier`` updates its weights with ``AdamOptimizer``, which builds
new lists of moment arrays and update arrays at every mini-batch step
(seven temporaries the size of the weights). On PySpacer's MLP (1280 x 100
weights, 200-row steps) that is a third of the training time. ``InPlaceAdam``
takes the same step with the same arithmetic in the same order (so the same
rounding, bit for bit: ``tests/training/test_adam.py``), into arrays it
keeps. It is swapped in for training only; :func:`restore` puts back a
plain ``AdamOptimizer`` with the same state before the classifier is
pickled, so the pickle holds scikit-learn classes only.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.neural_network._stochastic_optimizers import AdamOptimizer


class InPlaceAdam(AdamOptimizer):
    """``AdamOptimizer`` whose ``update_params`` allocates nothing big."""

    @classmethod
    def replacing(cls, optimizer: AdamOptimizer) -> InPlaceAdam:
        fused = cls.__new__(cls)
        fused.__dict__.update(optimizer.__dict__)
        fused.ms = [np.array(m) for m in optimizer.ms]
        fused.vs = [np.array(v) for v in optimizer.vs]
        return fused

    def update_params(self, params: list[np.ndarray],
                      grads: list[np.ndarray]) -> None:
        # scikit-learn: m = b1*m + (1-b1)*g; v = b2*v + (1-b2)*g**2;
        # param += -lr * m / (sqrt(v) + eps), lr a numpy float64 (so the
        # update is float64 for float32 weights, then rounded by +=).
        self.t += 1
        b1, b2 = self.beta_1, self.beta_2
        self.learning_rate = (self.learning_rate_init
                              * np.sqrt(1 - b2 ** self.t)
                              / (1 - b1 ** self.t))
        minus_rate = -self.learning_rate
        for param, m, v, grad in zip(params, self.ms, self.vs, grads,
                                     strict=True):
            scratch = _scratch(grad)
            m *= b1
            np.multiply(grad, 1 - b1, out=scratch)
            m += scratch
            v *= b2
            np.square(grad, out=scratch)
            scratch *= 1 - b2
            v += scratch
            np.sqrt(v, out=scratch)
            scratch += self.epsilon
            update = m * minus_rate
            update /= scratch
            param += update


def _scratch(like: np.ndarray) -> np.ndarray:
    return np.empty_like(like)


def use_in_place_adam(clf: Any) -> None:
    """Swap ``clf``'s Adam optimizer (after its first ``partial_fit``)."""
    optimizer = getattr(clf, '_optimizer', None)
    if type(optimizer) is AdamOptimizer:
        clf._optimizer = InPlaceAdam.replacing(optimizer)


def restore(clf: Any) -> None:
    """Put back a plain ``AdamOptimizer`` holding the same state."""
    optimizer = getattr(clf, '_optimizer', None)
    if isinstance(optimizer, InPlaceAdam):
        plain = AdamOptimizer.__new__(AdamOptimizer)
        plain.__dict__.update(optimizer.__dict__)
        clf._optimizer = plain
