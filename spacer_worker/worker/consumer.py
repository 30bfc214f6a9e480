"""The worker's message consumer, failing undecodable messages visibly.

Celery drops a message whose body cannot be decoded (not JSON, pickle
where only JSON is accepted) after logging it: its sender would wait for a
result that never comes. This consumer also records FAILURE for the
message's task id, with an error that says what was wrong, so the client
gets an answer. It also installs :mod:`spacer_worker.worker.consumed_queue`
before consuming, and closes remote control to the commands
WORKER_CONTROL_COMMANDS allows (:mod:`spacer_worker.worker.remote_control`).
Selected by the app's ``worker_consumer`` setting.
"""

from __future__ import annotations

import logging
from typing import Any

from celery.worker.consumer import Consumer as CeleryConsumer

from spacer_worker.exceptions import MessageError
from spacer_worker.worker import consumed_queue, remote_control

logger = logging.getLogger(__name__)


class Consumer(CeleryConsumer):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # Before any channel consumes: delivery_info then names the queue
        # a message was popped from, not the one its sender claims.
        consumed_queue.install()
        super().__init__(*args, **kwargs)
        # Only the allowed remote control commands (Flower's, revoke).
        remote_control.close(self)

    def on_decode_error(self, message: Any, exc: Exception) -> None:
        super().on_decode_error(message, exc)
        self._fail(message, f'its body could not be decoded as '
                            f'{message.content_type!r}: {exc}')

    def on_invalid_task(self, body: Any, message: Any, exc: Exception) -> None:
        super().on_invalid_task(body, message, exc)
        self._fail(message, f'it was refused: {exc}')

    def _fail(self, message: Any, why: str) -> None:
        headers = getattr(message, 'headers', None) or {}
        task_id, name = headers.get('id'), headers.get('task')
        if not isinstance(task_id, str) or not task_id:
            return          # nothing to attach a result to
        error = MessageError(
            f'Task {name} {task_id} cannot run: {why}. Send the PySpacer '
            f'JSON serialization of its message with the json serializer.')
        try:
            self.app.backend.mark_as_failure(task_id, error)
        except Exception:  # the backend being down must not stop the worker
            logger.exception('Could not record the failure of task %s',
                             task_id)
