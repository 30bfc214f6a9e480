from django.db import models


class Job(models.Model):
    """CoralNet's job record: what the web server knows about a spacer job."""

    name = models.CharField(max_length=40, default='')
    status = models.CharField(max_length=20, default='pending')
    result_message = models.TextField(null=True)
    collections = models.IntegerField(default=0)
    # How the failure was sorted (see vision/results.py).
    error_class = models.CharField(max_length=200, null=True)
    user_error = models.BooleanField(default=False)
    features_reset = models.BooleanField(default=False)


class ErrorLog(models.Model):
    """CoralNet's admin-facing error log (one per server-side failure)."""

    kind = models.CharField(max_length=200)
    info = models.TextField()
    path = models.CharField(max_length=200)
