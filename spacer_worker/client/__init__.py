"""The client side: what a web process (a Django app, a script) needs to
send work and read results, with only ``spacer_worker[client]`` installed.

* :mod:`.jobs`: :class:`Client` (submit, status, progress, result, cancel)
  and the module-level shortcuts;
* :mod:`.submission`: idempotent submission (one job per token or key);
* :mod:`.coralnet`: ``CeleryQueue``, CoralNet's job queue over the client
  (its setting names ``spacer_worker.contrib.coralnet.CeleryQueue``).
"""

from spacer_worker.client.jobs import (
    EXPEDITE,
    PRIORITY_RANGE,
    Client,
    JobHandle,
    JobState,
    JobStatus,
    cancel,
    decode_result,
    default_client,
    message_task,
    raise_for_status,
    result,
    status,
    status_from_meta,
    submit,
)

__all__ = [
    'EXPEDITE', 'PRIORITY_RANGE', 'Client', 'JobHandle', 'JobState',
    'JobStatus', 'cancel', 'decode_result', 'default_client', 'message_task',
    'raise_for_status', 'result', 'status', 'status_from_meta', 'submit',
]
