"""Classification: scoring feature vectors with a trained classifier
(:mod:`.scoring`) and keeping loaded classifiers per process
(:mod:`.model_cache`). The task bodies (classify_features, classify_image)
call these; worker side only."""
