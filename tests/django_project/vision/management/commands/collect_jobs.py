import json

from django.core.management.base import BaseCommand

from ...models import ErrorLog, Job
from ...queues import collect_spacer_jobs


class Command(BaseCommand):
    help = 'Collect finished spacer jobs; print statuses and job states.'

    def handle(self, **options):
        report = collect_spacer_jobs()
        jobs = list(Job.objects.all())
        report['jobs'] = {job.pk: [job.status, job.result_message,
                                   job.collections] for job in jobs}
        report['sorted'] = {job.pk: {
            'name': job.name, 'status': job.status,
            'error_class': job.error_class, 'user_error': job.user_error,
            'features_reset': job.features_reset} for job in jobs}
        report['error_logs'] = [[e.kind, e.path]
                                for e in ErrorLog.objects.all()]
        self.stdout.write(json.dumps(report))
