#!/usr/bin/env python3
"""Write the one-node Gemm models that training.products runs in ONNX
Runtime into the package (spacer_worker/training/gemm_*.onnx).

The worker reads them instead of building them, so a training never
imports onnx (0.7 s, 12 MB). Run again only if build_gemm_model changes;
tests/training/test_products.py checks the packaged files match it.
"""

from pathlib import Path

from spacer_worker.training import products

here = Path(products.__file__).parent
for trans_a, name in products.MODEL_FILES.items():
    (here / name).write_bytes(products.build_gemm_model(trans_a))
    print(f'wrote {here / name}')
