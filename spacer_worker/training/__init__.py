"""The scikit-learn side of training (worker only).

``loading`` reads every feature file once into one float32 matrix,
``minibatch`` runs PySpacer's mini-batch training on it, ``evaluation``
scores sets with the new and previous classifiers.
"""

from __future__ import annotations

from spacer_worker.training.loading import open_training_data
from spacer_worker.training.minibatch import train_minibatch

__all__ = ['train_minibatch', 'open_training_data']
