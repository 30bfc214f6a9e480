"""A received message's ``delivery_info`` names the queue it came from.

kombu's virtual transports (Redis among them) store a message as JSON whose
``properties.delivery_info`` (exchange, routing key) the *sender* wrote:
the broker does not fill it in, as AMQP does. Anyone who can push to a
Redis list can therefore send a message in the ``extract`` list that claims
``routing_key: train_high``. Celery and this worker read that field for the
time-limit ceiling (a high-spec queue allows days), the logs and metrics,
the queue a retry goes to (``Task.retry`` even copies every key of it into
the retry's options), and the list a lost message is restored to.

The one fact the sender cannot forge is the list the worker popped the
message from: kombu passes it to the per-queue callback it registered in
``basic_consume``. :func:`install` wraps that callback so that, before
kombu builds its Message, ``delivery_info`` is replaced by
``{'exchange': '', 'routing_key': <that queue>}`` (the anonymous exchange:
a restore or retry goes straight back to the same list), keeping only the
``redelivered`` flag. Installed by the worker's consumer; clients never
import this module.
"""

from __future__ import annotations

from typing import Any

from kombu.transport.virtual import base as virtual

_installed = False


def stamp(raw_message: Any, queue: str) -> None:
    """Rewrite a raw virtual-transport message's delivery_info in place."""
    properties = raw_message.get('properties') \
        if isinstance(raw_message, dict) else None
    if not isinstance(properties, dict):
        return          # kombu refuses it on its own
    sent = properties.get('delivery_info')
    info: dict[str, Any] = {'exchange': '', 'routing_key': queue}
    if isinstance(sent, dict) and sent.get('redelivered') is True:
        info['redelivered'] = True
    properties['delivery_info'] = info


def install() -> None:
    """Make every virtual-transport channel of this process stamp what it
    consumes. Idempotent."""
    global _installed
    if _installed:
        return
    original = virtual.Channel.basic_consume

    def basic_consume(self: Any, queue: str, *args: Any, **kwargs: Any
                      ) -> Any:
        result = original(self, queue, *args, **kwargs)
        inner = self.connection._callbacks[queue]

        def stamped(raw_message: Any) -> Any:
            stamp(raw_message, queue)
            return inner(raw_message)
        self.connection._callbacks[queue] = stamped
        return result

    virtual.Channel.basic_consume = basic_consume
    _installed = True
