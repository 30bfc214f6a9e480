"""PySpacer's ``spacer.mailman``: run one JobMsg read from a location and
write its JobReturnMsg to another, as PySpacer's AWS Batch entry point does.

    JOB_MSG_LOC='{"storage_type": "s3", "bucket_name": "b", "key": "job.json"}' \\
    RES_MSG_LOC='{"storage_type": "s3", "bucket_name": "b", "key": "res.json"}' \\
    python -m spacer_worker.mailman env_job

Both locations are DataLocation JSON and may be on any storage (PySpacer
writes the result to S3 only). A job that cannot run still gets an ok=False
answer. Like any direct call, this runs with the caller's trust: the
message is not sandboxed.
"""

from __future__ import annotations

import json
import logging
import os
import sys

from spacer_worker import config

__all__ = ['env_job', 'run_job_at']

logger = logging.getLogger(__name__)


def run_job_at(job_msg_loc: object, res_msg_loc: object | None = None
               ) -> dict:
    """Load the JobMsg at ``job_msg_loc``, run it, store the serialized
    JobReturnMsg at ``res_msg_loc`` (when given) and return it."""
    from spacer_worker.data_classes import DataLocation
    from spacer_worker.exceptions.failures import failure_text
    from spacer_worker.messages import JobMsg
    from spacer_worker.storage import store_bytes
    from spacer_worker.tasks import process_job

    if not isinstance(job_msg_loc, DataLocation):
        job_msg_loc = DataLocation.deserialize(job_msg_loc)
    with config.log_entry_and_exit('job message initialization'):
        job_msg = JobMsg.load(job_msg_loc)
    try:
        result = process_job(job_msg).serialize()
    except Exception as e:  # answer anyway, as PySpacer does
        result = {'original_job': job_msg.serialize(), 'ok': False,
                  'results': None,
                  'error_message': 'Error deserializing message: ' +
                                   failure_text(e)}
    if res_msg_loc is not None:
        if not isinstance(res_msg_loc, DataLocation):
            res_msg_loc = DataLocation.deserialize(res_msg_loc)
        with config.log_entry_and_exit(f'writing res to {res_msg_loc.key}'):
            store_bytes(res_msg_loc, json.dumps(result).encode('utf-8'))
    return result


def env_job() -> int:
    """Run the job whose DataLocation JSON is in $JOB_MSG_LOC, writing the
    result to the DataLocation in $RES_MSG_LOC (if set). Returns 1, as
    PySpacer's does."""
    job_loc = os.getenv('JOB_MSG_LOC')
    if job_loc is None:
        raise ValueError('JOB_MSG_LOC env. variable not set. '
                         'Can not process job.')
    logger.info('Received job from env var: %s', job_loc)
    res_loc = os.getenv('RES_MSG_LOC')
    run_job_at(json.loads(job_loc),
               json.loads(res_loc) if res_loc is not None else None)
    return 1


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args != ['env_job']:
        print('usage: python -m spacer_worker.mailman env_job  '
              '(reads $JOB_MSG_LOC and $RES_MSG_LOC)', file=sys.stderr)
        return 2
    from spacer_worker.config.logs import configure_logging
    configure_logging(default_destination='console')
    env_job()
    return 0


if __name__ == '__main__':  # pragma: no cover
    sys.exit(main())
