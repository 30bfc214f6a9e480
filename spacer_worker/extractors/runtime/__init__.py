"""The worker side of the extractors: numpy, ONNX Runtime, Pillow (torch
only for the PyTorch backend, from the ``gpu`` extra).

* :mod:`.architecture`: EfficientNet-b0's shape and parameter names.
* :mod:`.pt_reader`, :mod:`.pt_writer`: PyTorch ``.pt`` files without torch.
* :mod:`.folded`: its inference form (batch norm folded into convs), numpy.
* :mod:`.onnx_graph`, :mod:`.backends`: running it in ONNX Runtime;
  :mod:`.torch_backend`, :mod:`.torch_folded`: in PyTorch (CUDA).
* :mod:`.numpy_net`: PySpacer's network unfolded, in numpy (float64 path,
  calibration); :mod:`.network`: the same as a torch module.
* :mod:`.exact`: the float64 path for patches float32 cannot carry.
* :mod:`.patches`: PySpacer's 224x224 crops, window by window.
* :mod:`.weights`: fetching, verifying, caching and loading weight files.
* :mod:`.engine`: the per-process network cache, ``preload``.
* :mod:`.efficientnet`: ``run_efficientnet``, what the extractor calls.
* :mod:`.calibration`: weights with realistic feature sizes for tests.

Nothing is imported here: importing the package costs nothing.
"""
