"""The mini-batch steps of ``MLPClassifier.partial_fit``, in float32, faster.

scikit-learn's ``partial_fit`` spends a third of its time outside the two
matrix products that matter: validating and re-indexing its input, a
temporary per operation, seven per Adam step, the batch gathered from the
chunk at every step. :class:`MLPSteps` takes over a classifier after its
first ``partial_fit`` (which made its weights, optimizer and label
binarizer) and runs the iteration of every later call itself:

* the same sequence: the rows shuffled by the classifier's own generator
  with ``sklearn.utils.shuffle`` (:meth:`MLPSteps.draw_order`), batches of
  ``min(200, rows)``, a ReLU forward pass, softmax (logistic for two
  classes), the log loss with its L2 term, back-propagation, then Adam on
  every parameter;
* the same model: the classifier's own arrays are updated in place and
  its attributes (the optimizer's ``t`` and ``learning_rate``, ``loss_``,
  ``loss_curve_``, ``t_``, ``n_iter_``, ``best_loss_``,
  ``_no_improvement_count``) after every call, so between calls it is a
  plain scikit-learn object;
* single-precision arithmetic throughout, where scikit-learn rounds its
  Adam step through float64: the weights differ in the last bits, not in
  accuracy (``tests/training/test_mlp_steps.py`` trains both ways).

The caller may draw a chunk's order and gather its rows in that order
itself (:meth:`MLPSteps.run_ordered`): ``training.minibatch`` does so on a
second thread, a chunk ahead, so no step waits for a gather. The gradient
is kept unscaled and the batch's 1/rows folded into the Adam coefficients,
the first layer's two products (four fifths of a step) run on the faster
of OpenBLAS and ONNX Runtime's MLAS for the machine (``training.products``),
and the moment and weight updates are BLAS ``scal``/``axpy`` calls (one
pass each where numpy takes two). In the steps NumPy's BLAS has the
task's threads and scipy's (Adam's) one (``training.threads.step_threads``
says why).
TRAINING_PRECISION float64 keeps scikit-learn's own steps: that mode
trains PySpacer's very classifier, bit for bit.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.linalg import blas
from scipy.special import expit
from sklearn.neural_network import MLPClassifier
from sklearn.neural_network._stochastic_optimizers import AdamOptimizer
from sklearn.utils import check_random_state, gen_batches, shuffle

from spacer_worker.training.products import Products, products_for
from spacer_worker.training.threads import step_threads

FLOAT = np.float32
EPS = float(np.finfo(FLOAT).eps)


def supports(clf: Any) -> bool:
    """Whether ``clf`` (after a first ``partial_fit``) can run here: the
    classifier PySpacer trains, a ReLU MLP under Adam in float32."""
    return (isinstance(clf, MLPClassifier)
            and type(getattr(clf, '_optimizer', None)) is AdamOptimizer
            and clf.activation == 'relu' and clf.solver == 'adam'
            and clf.loss == 'log_loss' and bool(clf.shuffle)
            and not clf.early_stopping and clf.batch_size == 'auto'
            and clf.out_activation_ in ('softmax', 'logistic')
            and len(clf.coefs_) >= 2
            and all(w.dtype == FLOAT for w in clf.coefs_ + clf.intercepts_))


def shuffled_order(rows: int, generator: np.random.RandomState) -> np.ndarray:
    """The order ``partial_fit`` visits ``rows`` rows in, drawn from
    ``generator`` as scikit-learn draws it."""
    return shuffle(np.arange(rows, dtype=int), random_state=generator)


class _Adam:
    """scikit-learn's Adam for flat parameters, in place, in float32.

    m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2; p -= lr_t m / (sqrt(v) + eps)
    with g = scale * G: the caller passes the unscaled gradient G (it is
    overwritten) and the batch's 1/rows goes into the coefficients.
    """

    def __init__(self, param: np.ndarray, m: np.ndarray, v: np.ndarray):
        self.param, self.m, self.v = param, m, v

    def step(self, grad: np.ndarray, m_gain: float, v_gain: float,
             rate: float, b1: float, b2: float, eps: float) -> None:
        m, v, g = self.m.ravel(), self.v.ravel(), grad.ravel()
        blas.sscal(b1, m)
        blas.saxpy(g, m, a=m_gain)
        np.square(g, out=g)
        blas.sscal(b2, v)
        blas.saxpy(g, v, a=v_gain)
        np.sqrt(v, out=g)
        g += eps
        np.divide(m, g, out=g)
        blas.saxpy(g, self.param.ravel(), a=rate)


def _flat_copy(arrays: list[np.ndarray], sizes: list[int]) -> np.ndarray:
    flat = np.empty(sum(sizes), dtype=FLOAT)
    offset = 0
    for array, size in zip(arrays, sizes, strict=True):
        flat[offset:offset + size] = np.ravel(array)
        offset += size
    return flat


def _views(flat: np.ndarray, like: list[np.ndarray]) -> list[np.ndarray]:
    out, offset = [], 0
    for array in like:
        out.append(flat[offset:offset + array.size].reshape(array.shape))
        offset += array.size
    return out


class MLPSteps:
    """Runs ``clf.partial_fit(x, y)`` for a fitted float32 ``clf``."""

    def __init__(self, clf: Any, products: Products | None = None,
                 engine: str | None = None):
        if not supports(clf):
            raise ValueError('MLPSteps needs a float32 ReLU MLPClassifier '
                             'under Adam, after its first partial_fit')
        self.clf = clf
        self.layers = len(clf.coefs_)
        self._adopt()
        self._alpha = float(clf.alpha)
        self._rows = 0
        self._acts: list[np.ndarray] = []
        self._deltas: list[np.ndarray] = []
        self._masks: list[np.ndarray] = []
        self._ones = np.ones(0, dtype=FLOAT)
        # The first layer's two products (training.products); chosen for
        # the batch shape at the first call unless given: ``engine`` (a
        # resumed training's) or the rule's.
        self.products = products
        self._engine = engine

    def _adopt(self) -> None:
        # Every parameter, and its moments and gradient, as views of one
        # flat float32 array (the classifier holds the views): all of Adam
        # is then one pass of a few calls over all of them, in place.
        clf = self.clf
        self.optimizer = opt = clf._optimizer
        params = clf.coefs_ + clf.intercepts_
        sizes = [p.size for p in params]
        self._flat = [_flat_copy(arrays, sizes)
                      for arrays in (params, opt.ms, opt.vs)]
        views = [_views(flat, params) for flat in self._flat]
        clf.coefs_ = views[0][:self.layers]
        clf.intercepts_ = views[0][self.layers:]
        opt.ms, opt.vs = views[1], views[2]
        self.adam = _Adam(*self._flat)
        self._flat_grad = np.empty(sum(sizes), dtype=FLOAT)
        self.grads = _views(self._flat_grad, params)

    def _still_ours(self) -> bool:
        # scikit-learn's own partial_fit in between rebinds the moments.
        clf, opt = self.clf, self.clf._optimizer
        return (opt is self.optimizer and opt.ms[0].base is self._flat[1]
                and opt.vs[0].base is self._flat[2]
                and clf.coefs_[0].base is self._flat[0])

    def draw_order(self, rows: int) -> np.ndarray:
        """The order ``partial_fit`` of ``rows`` rows visits them in (one
        draw from the classifier's generator, as scikit-learn's)."""
        clf = self.clf
        # As scikit-learn's _fit does at every call.
        clf._random_state = check_random_state(clf.random_state)
        return shuffled_order(rows, clf._random_state)

    def partial_fit(self, x: np.ndarray, y: np.ndarray) -> None:
        """One pass over ``x`` (float32 rows) with labels ``y``, as
        ``clf.partial_fit(x, y)``."""
        order = self.draw_order(len(x))
        self.run_ordered(np.take(np.asarray(x), order, axis=0),
                         np.asarray(y)[order])

    def run_ordered(self, x: np.ndarray, y: np.ndarray) -> None:
        """``partial_fit`` of rows already in :meth:`draw_order`'s order
        (drawn for this call, and nothing drawn since)."""
        clf = self.clf
        dim = clf.coefs_[0].shape[0]
        if x.dtype != FLOAT or x.ndim != 2 or x.shape[1] != dim \
                or not x.flags.c_contiguous:
            raise ValueError(f'expected C-ordered float32 rows of {dim} '
                             f'features, got {x.dtype} {x.shape}')
        targets = self._class_indices(np.asarray(y))
        if not self._still_ours():
            self._adopt()
        n = len(x)
        batch = min(200, n)
        self._resize(batch)
        self._choose_products(batch)
        accumulated = 0.0
        with step_threads():
            for part in gen_batches(n, batch):
                accumulated += self._step(x[part], targets[part]) \
                    * (part.stop - part.start)
        clf.n_iter_ = 1
        clf.loss_ = accumulated / n
        clf.t_ += n
        clf.loss_curve_.append(clf.loss_)
        clf._update_no_improvement_count(False, None, None)
        if not np.isfinite(self._flat[0]).all():
            raise ValueError(
                "Solver produced non-finite parameter weights. The input "
                "data may contain large values and need to be "
                "preprocessed.")

    def predict(self, x: np.ndarray) -> np.ndarray:
        """``clf.predict(x)`` for C-ordered float32 rows, the first layer's
        product on this training's engine (the reference accuracy after
        each epoch: 5000 rows, a tenth of an epoch's products)."""
        clf = self.clf
        if x.dtype != FLOAT or x.ndim != 2 or not x.flags.c_contiguous \
                or x.shape[1] != clf.coefs_[0].shape[0]:
            return clf.predict(x)
        self._choose_products(min(200, len(x)))
        hidden = np.empty((len(x), clf.coefs_[0].shape[1]), dtype=FLOAT)
        self.products.forward(x, clf.coefs_[0], hidden)
        out = hidden
        for i in range(self.layers):
            if i:
                out = out @ clf.coefs_[i]
            out += clf.intercepts_[i]
            if i < self.layers - 1:
                np.maximum(out, 0, out=out)
        # As scikit-learn's predict: the output activation, then the
        # label binarizer's inverse (argmax, or > 0.5 for two classes).
        if clf.out_activation_ == 'softmax':
            out -= out.max(axis=1, keepdims=True)
            np.exp(out, out=out)
            out /= out.sum(axis=1, keepdims=True)
        else:
            out = expit(out).ravel()
        return clf._label_binarizer.inverse_transform(out)

    def _choose_products(self, batch: int) -> None:
        if self.products is None:
            dim, width = self.clf.coefs_[0].shape
            self.products = products_for(batch, dim, width, self._engine)

    def _class_indices(self, y: np.ndarray) -> np.ndarray:
        classes = self.clf.classes_
        found = np.searchsorted(classes, y)
        found[found == len(classes)] = 0
        if (classes[found] != y).any():
            raise ValueError(
                f"`y` has classes not in `self.classes_`. `self.classes_` "
                f"has {classes}. 'y' has {np.unique(y)}.")
        return found

    def _resize(self, rows: int) -> None:
        if rows != self._rows:
            self._rows = rows
            widths = [w.shape[1] for w in self.clf.coefs_]
            self._acts = [np.empty((rows, w), dtype=FLOAT) for w in widths]
            self._deltas = [np.empty((rows, w), dtype=FLOAT)
                            for w in widths[:-1]]
            self._masks = [np.empty((rows, w), dtype=FLOAT)
                           for w in widths[:-1]]
            self._ones = np.ones(rows, dtype=FLOAT)

    def _step(self, xb: np.ndarray, target: np.ndarray) -> float:
        clf = self.clf
        rows = len(xb)
        coefs, intercepts = clf.coefs_, clf.intercepts_
        last = self.layers - 1
        acts = [xb] + [a[:rows] for a in self._acts]
        squares = 0.0
        for i in range(self.layers):
            squares += float(np.dot(coefs[i].ravel(), coefs[i].ravel()))
            if i == 0:
                self.products.forward(xb, coefs[0], acts[1])
            else:
                np.matmul(acts[i], coefs[i], out=acts[i + 1])
            acts[i + 1] += intercepts[i]
            if i < last:
                np.maximum(acts[i + 1], 0, out=acts[i + 1])
        out = acts[-1]
        picked = np.arange(rows)
        if clf.out_activation_ == 'softmax':
            out -= out.max(axis=1, keepdims=True)
            np.exp(out, out=out)
            out /= out.sum(axis=1, keepdims=True)
            # log loss: only the true class's probability counts.
            loss = -np.log(np.clip(out[picked, target], EPS, 1 - EPS)).sum()
            out[picked, target] -= 1          # delta = p - y
        else:
            expit(out, out=out)
            p = np.clip(out[:, 0], EPS, 1 - EPS)
            positive = target == 1
            loss = -(np.log(p[positive]).sum()
                     + np.log(1 - p[~positive]).sum())
            out[:, 0] -= positive
        loss = float(loss) / rows + 0.5 * self._alpha * squares / rows

        # Unscaled gradients G = A^T delta + alpha W (and delta summed for
        # the intercepts), all computed before any weight moves.
        delta = out
        grads = self.grads
        for i in range(last, -1, -1):
            if i == 0:
                self.products.weight_grad(xb, delta, grads[0])
            else:
                np.matmul(acts[i].T, delta, out=grads[i])
            blas.saxpy(coefs[i].ravel(), grads[i].ravel(), a=self._alpha)
            # Column sums as a product: numpy's reduction along rows is
            # several times slower.
            np.matmul(self._ones[:rows], delta, out=grads[self.layers + i])
            if i:
                below = self._deltas[i - 1][:rows]
                np.matmul(delta, coefs[i].T, out=below)
                # ReLU's derivative: 1 where the unit was active (> 0).
                mask = self._masks[i - 1][:rows]
                np.sign(acts[i], out=mask)
                below *= mask
                delta = below
        self.adam.step(self._flat_grad, *self._adam_coefficients(rows))
        return loss

    def _adam_coefficients(self, rows: int) -> tuple[float, ...]:
        opt = self.optimizer
        opt.t += 1
        b1, b2 = opt.beta_1, opt.beta_2
        opt.learning_rate = (opt.learning_rate_init * np.sqrt(1 - b2 ** opt.t)
                             / (1 - b1 ** opt.t))
        scale = 1.0 / rows
        return ((1 - b1) * scale, (1 - b2) * scale * scale,
                -float(opt.learning_rate), b1, b2, float(opt.epsilon))
