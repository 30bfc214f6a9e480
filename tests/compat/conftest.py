"""The compat tests use the distributed tier's real services (a Redis per
test database, celery worker subprocesses)."""

from tests.distributed.conftest import (  # noqa: F401
    app,
    broker_url,
    data_dir,
    redis_db,
    redis_server,
    start_worker,
)
