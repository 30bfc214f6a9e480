"""CoralNet's side with PySpacer (0.13.0 or 0.14.0) in the web process:
every message is built with ``spacer``'s own classes (not spacer_worker's)
and handed to the queue that SPACER_QUEUE_CHOICE names, the one setting
CoralNet changes.
"""

import inspect
import json
from pathlib import Path

from django.core.management.base import BaseCommand

from ...queues import submit_with_handles

IMAGE_COUNT = 8
ROWCOLS = [(4 * i + 2, 5 * i + 3) for i in range(8)]   # inside 64 x 48


def _loc(path):
    from spacer.data_classes import DataLocation
    return DataLocation('filesystem', str(path))


def _extraction(image, features, rowcols, image_loc=None):
    from spacer.extractors import DummyExtractor
    from spacer.messages import ExtractFeaturesMsg, JobMsg

    def build(job_id):
        return JobMsg(task_name='extract_features', tasks=[ExtractFeaturesMsg(
            job_token=str(job_id), extractor=DummyExtractor(feature_dim=16),
            rowcols=list(rowcols), image_loc=image_loc or _loc(image),
            feature_loc=_loc(features(job_id)))])
    return build


def _training(data, labels_by_feature, name, stale=False):
    from spacer.data_classes import ImageLabels
    from spacer.messages import JobMsg, TrainClassifierMsg
    from spacer.task_utils import preprocess_labels

    labels = {_loc(path): list(points)
              for path, points in labels_by_feature.items()}
    if stale:
        first = next(iter(labels))
        labels[first] = labels[first] + [(999, 999, 1)]
    split = preprocess_labels(ImageLabels(labels), split_ratios=(0.25, 0.25))

    # PySpacer 0.13's constructor takes trainer_name, 0.14's trainer.
    params = inspect.signature(TrainClassifierMsg.__init__).parameters
    trainer = ({'trainer_name': 'minibatch'} if 'trainer_name' in params
               else {'trainer': 'minibatch'})

    def build(job_id):
        return JobMsg(task_name='train_classifier', tasks=[TrainClassifierMsg(
            job_token=str(job_id), **trainer, nbr_epochs=3,
            clf_type='MLP', labels=split, previous_model_locs=[],
            model_loc=_loc(data / f'{name}.model'),
            valresult_loc=_loc(data / f'{name}.valresult.json'))])
    return build


class Command(BaseCommand):
    help = ('Submit jobs built with PySpacer\'s own classes; print '
            '{name: [job id, task id]}.')

    def add_arguments(self, parser):
        parser.add_argument('step', choices=['extract', 'train', 'classify'])
        parser.add_argument('data_dir')
        parser.add_argument('--http-base', default='http://127.0.0.1:9')

    def handle(self, step, data_dir, http_base, **options):
        from tests.client.helpers import write_image

        data = Path(data_dir)
        scenarios = {}
        if step == 'extract':
            images = [write_image(data / f'img{i}.png', seed=i)
                      for i in range(IMAGE_COUNT)]
            junk = data / 'notes.png'
            junk.write_text('field notes, not pixels\n')

            def features(job_id):
                return data / f'{job_id}.featurevector'

            for i, image in enumerate(images):
                scenarios[f'extract{i}'] = (_extraction(image, features,
                                                        ROWCOLS), 'medium')
            from spacer.data_classes import DataLocation
            scenarios.update({
                'bad_url': (_extraction(None, features, [(1, 1)],
                                        DataLocation('url', f'{http_base}/gone.jpg')),
                            'medium'),
                'not_an_image': (_extraction(junk, features, [(1, 1)]), 'medium'),
                'too_many_points': (_extraction(images[0], features,
                                                [(1, 1)] * 1001), 'medium'),
                'bad_row_column': (_extraction(images[0], features, [(48, 3)]),
                                   'medium'),
                'lost': (_extraction(images[0], features, [(2, 2)]), 'medium'),
            })
        else:
            done = json.loads((data / 'extracted.json').read_text())
            labelled = {data / f'{job_id}.featurevector':
                        [(r, c, 1 + (i + k) % 3)
                         for k, (r, c) in enumerate(ROWCOLS)]
                        for i, job_id in enumerate(done)}
            if step == 'train':
                scenarios = {
                    'train': (_training(data, labelled, 'clf'), 'medium'),
                    'stale_features': (_training(data, labelled, 'stale',
                                                 stale=True), 'medium'),
                    # HIGH: train_high, which the test serves only later.
                    'revoked': (_training(data, labelled, 'revoked'), 'high'),
                }
            else:
                from spacer.messages import ClassifyFeaturesMsg, JobMsg
                feature = next(iter(labelled))

                def classify(job_id):
                    return JobMsg(task_name='classify_features', tasks=[
                        ClassifyFeaturesMsg(job_token=str(job_id),
                                            feature_loc=_loc(feature),
                                            classifier_loc=_loc(data / 'clf.model'))])
                scenarios = {'classify': (classify, 'medium')}
        out = {}
        for name, (build, spec) in scenarios.items():
            [(job_id, task_id)] = submit_with_handles(build, 1, spec, name)
            out[name] = [job_id, task_id]
        self.stdout.write(json.dumps(out))
