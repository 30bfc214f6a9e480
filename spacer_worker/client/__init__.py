"""The client side: what a web process (a Django app, a script) needs to
send work and read results, with only ``spacer_worker[client]`` installed.

* :mod:`.jobs`: :class:`Client` (submit, status, progress, result, cancel)
  and the module-level shortcuts;
* :mod:`.submission`: idempotent submission (one job per token or key);
* :mod:`.coralnet`: ``CeleryQueue``, CoralNet's job queue over the client
  (its setting names ``spacer_worker.contrib.coralnet.CeleryQueue``).
"""

from spacer_worker.client.jobs import *  # noqa: F403
from spacer_worker.client.jobs import __all__ as __all__
