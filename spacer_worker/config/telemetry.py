"""No traffic that no message asked for: libraries' telemetry is off.

A worker connects only where a message (or its operator's settings) tells
it to. Of the libraries a worker loads, one phones home on its own: ONNX
Runtime's official builds (1.2x and later on Linux) carry Microsoft's 1DS
telemetry SDK, which uploads usage events over HTTPS (to
``mobile.events.data.microsoft.com``) unless ``ORT_DISABLE_TELEMETRY=1``
is set before ONNX Runtime initializes; its Python call
``disable_telemetry_events()`` only mutes non-essential events after an
initialization event may already have gone. :func:`onnxruntime` sets both,
and is the one way our code imports ONNX Runtime.

Audited and found quiet (no connection of their own): torch (``torch.hub``
downloads only when called; we never call it), scikit-learn, numpy,
Pillow, matplotlib, Celery, kombu, redis-py, urllib3. boto3/botocore send
nothing unasked either, but their credential chain asks the cloud
metadata service (169.254.169.254) for credentials when none are
configured, and only when an S3 location is used: configure
AWS_ACCESS_KEY_ID/SECRET or a profile to keep that off (or set
``AWS_EC2_METADATA_DISABLED=true`` where no instance role is wanted).
``DO_NOT_TRACK=1`` (the cross-tool opt-out) is set too, for any library
that honours it.
"""

from __future__ import annotations

import os
import sys
from types import ModuleType

OPT_OUTS = {'ORT_DISABLE_TELEMETRY': '1', 'DO_NOT_TRACK': '1'}


def turn_off() -> None:
    """Set the opt-outs in this process's environment (children inherit
    them) and mute an ONNX Runtime that is already loaded."""
    os.environ.update(OPT_OUTS)
    ort = sys.modules.get('onnxruntime')
    disable = getattr(ort, 'disable_telemetry_events', None)
    if disable is not None:
        disable()


def onnxruntime() -> ModuleType:
    """``import onnxruntime`` with its telemetry off (ImportError where it
    is not installed)."""
    os.environ.update(OPT_OUTS)
    import onnxruntime as ort
    turn_off()
    return ort
