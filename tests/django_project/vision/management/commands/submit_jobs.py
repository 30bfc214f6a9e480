import json

from django.core.management.base import BaseCommand

from tests.client.helpers import LocalOnlyExtractor, extract_job

from ...queues import submit


class Command(BaseCommand):
    help = 'Enqueue extraction jobs on IMAGE; --bad N of them name an ' \
           'extractor the workers refuse.'

    def add_arguments(self, parser):
        parser.add_argument('image')
        parser.add_argument('out_dir')
        parser.add_argument('--count', type=int, default=1)
        parser.add_argument('--bad', type=int, default=0)

    def handle(self, image, out_dir, count, bad, **options):
        from pathlib import Path

        def good(job_id):
            return extract_job([Path(image)], Path(out_dir), token=str(job_id))

        def refused(job_id):
            return extract_job([Path(image)], Path(out_dir), token=str(job_id),
                               extractor=LocalOnlyExtractor(feature_dim=8))

        ids = submit(good, count) + submit(refused, bad)
        self.stdout.write(json.dumps(ids))
