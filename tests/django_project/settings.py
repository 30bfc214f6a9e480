"""A minimal Django project standing in for CoralNet's web server: it
enqueues spacer jobs through the queue class named by SPACER_QUEUE_CHOICE
and collects their results, as CoralNet's vision_backend does."""

import os

SECRET_KEY = 'tests-only'
DEBUG = False
USE_TZ = True
INSTALLED_APPS = ['tests.django_project.vision']
DATABASES = {
    'default': {
        'ENGINE': 'django.db.backends.sqlite3',
        'NAME': os.environ.get('TEST_DJANGO_DB', ':memory:'),
    },
}
DEFAULT_AUTO_FIELD = 'django.db.models.AutoField'

# CoralNet swaps AWS Batch for Celery with this one setting.
SPACER_QUEUE_CHOICE = 'spacer_worker.contrib.coralnet.CeleryQueue'

# spacer_worker reads its settings from here (as PySpacer does) when no
# SPACER_* variable or secrets.json sets them.
SPACER = {
    'BROKER_URL': os.environ['TEST_REDIS_URL'],
    'EXTRA_EXTRACTOR_CLASSES': 'tests.client.helpers.LocalOnlyExtractor',
}
