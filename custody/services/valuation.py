"""A valuation's possible-poison flags as review findings (issue 15 item 3).

A valuation job (training/services/valuation.py) keeps the ids of the records it flags sealed in
custody. When the owner values a version still in review, the launcher also records each flagged
record here as a finding of kind ``possible_poison``: the provider sees it in the review beside
the screening findings (only the owner's members see the review; the record's text is decrypted
for them by the review's own grant, as for every finding), and can drop it before sealing like
any other finding. A sealed version is not changed: its flags wait in custody for the next
version (not built yet).
"""

from __future__ import annotations

from collections.abc import Iterable

from django.db import transaction

from common.audit import audit_record
from custody.models import DatasetVersion, Finding, VersionState

POSSIBLE_POISON = "possible_poison"


@transaction.atomic
def valuation_flags_record(*, version: DatasetVersion, record_ids: Iterable[int], source: str) -> int:
    """Record flagged records as ``possible_poison`` findings of a version in review.

    Idempotent per record (a rerun adds only new ones); a version not in review is left alone.
    ``source`` names the valuation (its job's public id) in the finding's detail, never a text.
    Returns how many findings were added.
    """
    locked = DatasetVersion.objects.select_for_update().select_related("dataset").get(pk=version.pk)
    if locked.state != VersionState.REVIEW:
        return 0
    ids = sorted(set(record_ids))
    known = set(
        Finding.objects.filter(version=locked, kind=POSSIBLE_POISON, record_id__in=ids).values_list(
            "record_id", flat=True
        )
    )
    new = [
        Finding(
            version=locked,
            record_id=record_id,
            kind=POSSIBLE_POISON,
            detail=f"its label disagrees with its nearest records' (valuation {source})"[:300],
            group=source[:64],
        )
        for record_id in ids
        if record_id not in known
    ]
    Finding.objects.bulk_create(new)
    audit_record(
        action="custody.valuation_flags",
        organisation=locked.dataset.owner,
        object_type="dataset_version",
        object_id=locked.pk,
        details={"source": source, "flagged": len(ids), "added": len(new)},
    )
    return len(new)
