from django.db import models


class Job(models.Model):
    """CoralNet's job record: what the web server knows about a spacer job."""

    status = models.CharField(max_length=20, default='pending')
    result_message = models.TextField(null=True)
    collections = models.IntegerField(default=0)
