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

# Failures are sorted as CoralNet sorts them: by the class path on the last
# line of error_message (vision/results.py).
SPACER_USER_ERRORS = [
    'spacer.exceptions.URLDownloadError',
    'spacer.exceptions.DataLimitError',
    'spacer.exceptions.RowColumnInvalidError',
    'PIL.UnidentifiedImageError',
]
SPACER_STALE_FEATURES_ERROR = 'spacer.exceptions.RowColumnMismatchError'
ADMINS = [('Admin', 'admin@example.org')]
# Admin e-mails land as files, so the test (another process) can read them.
EMAIL_BACKEND = 'django.core.mail.backends.filebased.EmailBackend'
EMAIL_FILE_PATH = os.environ.get('TEST_DJANGO_MAIL_DIR', '/tmp/django-mail')
