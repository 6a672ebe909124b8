"""The Celery app: queues ``default``, ``custody``, ``training`` and ``serving`` (plug-in inference).

Tasks acknowledge late and are rejected (so redelivered) when their worker is
lost; prefetch is 1 so a long task never holds others hostage. The database
holds the state of every unit of work; the broker is only a doorbell.
"""

import os

from celery import Celery
from kombu import Queue

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("sealroom")
app.config_from_object("django.conf:settings", namespace="CELERY")
# Each queue routes by its own name, so a message for one queue can never be
# bound to another through a shared routing key.
app.conf.task_queues = [
    Queue(name, routing_key=name) for name in ("default", "custody", "training", "serving")
]
app.conf.task_default_queue = "default"
app.conf.broker_connection_retry_on_startup = True
app.autodiscover_tasks()
