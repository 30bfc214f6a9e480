"""The path CoralNet's setting names (``SPACER_QUEUE_CHOICE =
'spacer_worker.contrib.coralnet.CeleryQueue'``); the queue itself lives
with the rest of the client side, in :mod:`spacer_worker.client.coralnet`."""

from spacer_worker.client.coralnet import (
    DEFAULT_PREFIX,
    CeleryJob,
    CeleryQueue,
    parse_spec_queues,
)

__all__ = ['DEFAULT_PREFIX', 'CeleryJob', 'CeleryQueue', 'parse_spec_queues']
