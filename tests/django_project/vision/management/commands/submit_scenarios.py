import json
from pathlib import Path

from django.core.management.base import BaseCommand

from ...queues import submit_with_handles


class Command(BaseCommand):
    help = ('Enqueue one job per failure CoralNet must sort (and one that '
            'succeeds); print {scenario: [job id, task id]}.')

    def add_arguments(self, parser):
        parser.add_argument('data_dir')
        parser.add_argument('http_base', help='a server answering 404')

    def handle(self, data_dir, http_base, **options):
        from spacer_worker.data_classes import DataLocation
        from spacer_worker.messages import JobMsg
        from tests.client.helpers import extract_msg, write_image
        from tests.compat.test_failure_classes import _stale_training_job

        data = Path(data_dir)
        image = write_image(data / 'img.png')            # 64 x 48
        junk = data / 'notes.png'
        junk.write_text('field notes, not pixels\n')

        def extraction(source, rowcols, storage='filesystem'):
            def build(job_id):
                msg = extract_msg(Path(source), data / f'{job_id}.fv',
                                  token=str(job_id), rowcols=rowcols)
                if storage != 'filesystem':
                    msg.image_loc = DataLocation(storage, str(source))
                return JobMsg(task_name='extract_features', tasks=[msg])
            return build

        def training(epochs):
            def build(job_id):
                folder = data / f'train{job_id}'
                folder.mkdir()
                job = _stale_training_job(folder)
                msg = job.tasks[0]
                msg.job_token = str(job_id)
                msg.nbr_epochs = epochs
                return job
            return build

        scenarios = {
            'ok': (extraction(image, [(1, 1)]), 'medium'),
            'bad_url': (extraction(f'{http_base}/gone.jpg', [(1, 1)], 'url'),
                        'medium'),
            'not_an_image': (extraction(junk, [(1, 1)]), 'medium'),
            'too_many_points': (extraction(image, [(1, 1)] * 1001), 'medium'),
            'bad_row_column': (extraction(image, [(48, 3)]), 'medium'),
            'stale_features': (training(1), 'medium'),
            'lost': (extraction(image, [(2, 2)]), 'medium'),
            # HIGH: goes to train_high, which the test serves only later.
            'revoked': (training(1), 'high'),
        }
        out = {}
        for name, (build, spec) in scenarios.items():
            [(job_id, task_id)] = submit_with_handles(build, 1, spec, name)
            out[name] = [job_id, task_id]
        self.stdout.write(json.dumps(out))
