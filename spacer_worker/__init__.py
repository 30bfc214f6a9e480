"""spacer_worker: PySpacer's jobs as a distributed Celery service.

Importing the package has no side effects: no settings are read, no
network is built, no Celery app is created until asked for.
"""

__version__ = '0.1.0'

__all__ = ['__version__']
