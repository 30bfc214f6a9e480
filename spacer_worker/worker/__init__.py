"""The Celery side of a worker: what ``celery -A spacer_worker worker`` runs.

``tasks`` (the ``spacer.*`` task adapters over :mod:`spacer_worker.tasks`),
``signals`` (per-process hooks: preload the extractor), ``consumer`` (fails
undecodable messages visibly), ``leases`` (requeue the messages of dead
workers) and ``embedded`` (a worker thread on an in-memory broker, for the
demo). The app in :mod:`spacer_worker.celery` loads these in workers only.
"""
