"""A custom trainer written for PySpacer's four-argument call."""

from spacer_worker.train_classifier import ClassifierTrainer, MiniBatchTrainer


class FourArgTrainer(ClassifierTrainer):
    calls: list = []

    def __call__(self, labels, nbr_epochs, pc_models, clf_type):
        FourArgTrainer.calls.append((nbr_epochs, clf_type))
        return MiniBatchTrainer()(labels, nbr_epochs, pc_models,
                                  clf_type)
