"""The demo seed: a license for Bolt on the demo tickets and one small queued job, once."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import call_command

from common.models import WorkItem
from custody.models import Grant
from training.models import JobState, TrainingJob


@pytest.mark.django_db
def test_the_demo_seed_queues_one_small_job_once():
    out = StringIO()
    call_command("demo_seed", stdout=out)
    assert TrainingJob.objects.count() == 1, out.getvalue()
    job = TrainingJob.objects.get()
    assert job.state == JobState.QUEUED and job.base.name == "gpt2-tiny"
    assert job.organisation.name == "Bolt Models"
    assert WorkItem.objects.filter(kind="training.job", ref=str(job.pk)).exists()
    licenses = Grant.objects.filter(licensee=job.organisation, purpose="license").count()
    again = StringIO()
    call_command("demo_seed", stdout=again)
    assert TrainingJob.objects.count() == 1
    assert Grant.objects.filter(licensee=job.organisation, purpose="license").count() == licenses
