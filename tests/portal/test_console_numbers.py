"""Console filters and forms read ids as ASCII digits: "²" passes str.isdigit, and int() refuses it."""

from __future__ import annotations

import pytest
from django.urls import reverse

from common.models import WorkItem, WorkState
from tests.portal.test_console import record_events, seqs_on, staff_client, text_of
from tests.portal.test_console_work import failed


@pytest.mark.parametrize("raw", ["²", "٣", "9" * 25])
def test_an_actor_or_organisation_filter_in_other_digits_is_a_name_not_a_crash(acme, alice, audrey, raw):
    record_events(acme, alice, 1)
    client = staff_client(audrey)
    for field in ("actor", "organisation"):
        response = client.get(reverse("console:audit"), {field: raw})
        assert response.status_code == 200
        assert seqs_on(text_of(response)) == []


@pytest.mark.parametrize("raw", ["²", "٣", "1_0"])
def test_a_page_cursor_in_other_digits_is_ignored(acme, alice, audrey, raw):
    record_events(acme, alice, 2)
    response = staff_client(audrey).get(reverse("console:audit"), {"before": raw})
    assert response.status_code == 200
    assert len(seqs_on(text_of(response))) == 2


def test_retrying_a_work_item_named_in_other_digits_is_refused(ops):
    stuck = failed()
    client = staff_client(ops)
    arabic_indic = str(stuck.pk).translate(str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩"))
    response = client.post(reverse("console:work_retry"), {"item": arabic_indic, "reason": "digits"})
    assert response.status_code == 422
    assert WorkItem.objects.get(pk=stuck.pk).state == WorkState.FAILED
