"""The worker side of the extractors: torch, ONNX Runtime, Pillow, numpy.

* :mod:`.network`: EfficientNet-b0 with PySpacer's parameter names.
* :mod:`.folded`: its inference form (batch norm folded into convs).
* :mod:`.onnx_graph`, :mod:`.backends`: running it (ONNX Runtime / PyTorch).
* :mod:`.patches`: PySpacer's 224x224 crops, window by window.
* :mod:`.weights`: fetching, verifying and caching weight files.
* :mod:`.engine`: the per-process network cache, ``preload``.
* :mod:`.efficientnet`: ``run_efficientnet``, what the extractor calls.
* :mod:`.calibration`: weights with realistic feature sizes for tests.

Nothing is imported here: importing the package costs nothing.
"""
