"""Classification: scoring feature vectors with a trained classifier
(:mod:`.scoring`; loaded classifiers are kept per process by
:mod:`spacer_worker.storage.classifier_cache`). The task bodies
(classify_features, classify_image) call these; worker side only."""
