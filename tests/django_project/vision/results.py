"""What CoralNet's web server does with a finished spacer job, written from
its observable behaviour (it compares strings, it does not import
spacer_worker's error tables):

* the last line of ``error_message`` is the one-line summary; the part
  before its first colon is the error's class path;
* a stale-features error on a training makes it reset the source's
  features (they are extracted again, then training is retried);
* the user errors below are reported to the user only;
* anything else is a server error: the admins get an e-mail and an error
  log entry is written.
"""

from __future__ import annotations

from django.conf import settings
from django.core.mail import mail_admins

from .models import ErrorLog, Job


def summary_of(error_message: str) -> tuple[str, str, str]:
    """(last line, class path, info) as CoralNet splits them."""
    last = error_message.splitlines()[-1]
    error_class, _, info = last.partition(':')
    return last, error_class.strip(), info.strip()


def handle(job_res) -> Job:
    task = job_res.original_job.tasks[0]
    job = Job.objects.get(pk=int(task.job_token))
    job.collections += 1
    job.result_message = job_res.error_message
    if job_res.ok:
        job.status = 'success'
        job.save()
        return job
    last, error_class, info = summary_of(job_res.error_message)
    job.status = 'error'
    job.error_class = error_class
    task_name = job_res.original_job.task_name
    if error_class == settings.SPACER_STALE_FEATURES_ERROR and \
            task_name == 'train_classifier':
        job.features_reset = True        # re-extract, then train again
    elif error_class in settings.SPACER_USER_ERRORS:
        job.user_error = True
    else:
        mail_admins(f'Spacer job failed: {task_name}', repr(job_res))
        ErrorLog.objects.create(kind=error_class.split('.')[-1], info=info,
                                path=f'Spacer - {task_name}')
    job.save()
    return job
