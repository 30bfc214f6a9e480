import json

from django.core.management.base import BaseCommand

from ...models import Job
from ...queues import collect_spacer_jobs


class Command(BaseCommand):
    help = 'Collect finished spacer jobs; print statuses and job states.'

    def handle(self, **options):
        report = collect_spacer_jobs()
        report['jobs'] = {job.pk: [job.status, job.result_message,
                                   job.collections]
                          for job in Job.objects.all()}
        self.stdout.write(json.dumps(report))
