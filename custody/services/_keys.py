"""Key plumbing shared by the custody services (data keys, quarantine keys, system grants)."""

from __future__ import annotations

import hashlib
import hmac

from django.db import transaction

from common.audit import audit_record
from common.models import User
from custody.crypto import new_data_key
from custody.keys import kek_provider
from custody.models import Contribution, DatasetVersion, Grant, GrantPurpose


def version_keys_create(version: DatasetVersion) -> None:
    """Give a new version its KEK, data key and pseudonym secret (both stored wrapped)."""
    provider = kek_provider()
    provider.kek_create(name=version.key_name)
    version.wrapped_data_key = provider.wrap_data_key(
        name=version.key_name, data_key=new_data_key(), key_version=version.key_version
    )
    # The pseudonym secret is wrapped under "key version 0" so it never collides
    # with a data key's context and survives data-key rotation unchanged.
    version.wrapped_pseudonym_key = provider.wrap_data_key(
        name=version.key_name, data_key=new_data_key(), key_version=0
    )


def version_data_key(version: DatasetVersion) -> bytes:
    """:raises KeyUnavailable: the version's key is disabled or destroyed."""
    assert version.wrapped_data_key is not None
    return kek_provider().unwrap_data_key(
        name=version.key_name, wrapped=bytes(version.wrapped_data_key), key_version=version.key_version
    )


def version_pseudonym_key(version: DatasetVersion) -> bytes:
    assert version.wrapped_pseudonym_key is not None
    return kek_provider().unwrap_data_key(
        name=version.key_name, wrapped=bytes(version.wrapped_pseudonym_key), key_version=0
    )


def version_screening_key(version: DatasetVersion) -> bytes:
    """A per-version key for screening hashes, so they cannot be reversed with a word list."""
    return hmac.new(version_pseudonym_key(version), b"sealroom/screening/v1", hashlib.sha256).digest()


def quarantine_key_create(contribution: Contribution) -> None:
    provider = kek_provider()
    provider.kek_create(name=contribution.quarantine_key_name)
    contribution.wrapped_quarantine_key = provider.wrap_data_key(
        name=contribution.quarantine_key_name, data_key=new_data_key(), key_version=1
    )


def quarantine_key(contribution: Contribution) -> bytes:
    """:raises KeyUnavailable: the quarantine copy was shredded."""
    assert contribution.wrapped_quarantine_key is not None
    return kek_provider().unwrap_data_key(
        name=contribution.quarantine_key_name,
        wrapped=bytes(contribution.wrapped_quarantine_key),
        key_version=1,
    )


def system_grant(version: DatasetVersion, purpose: GrantPurpose) -> Grant:
    """The platform's own grant on a version for one purpose (ingest, review, ...)."""
    grant, _ = Grant.objects.get_or_create(
        version=version, purpose=purpose, licensee=None, defaults={"terms": {"platform": True}}
    )
    return grant


def audit_decrypt(
    *,
    grant: Grant,
    version: DatasetVersion,
    what: str,
    count: int,
    consumer_ref: str = "",
    actor: User | None = None,
) -> None:
    """Record one decrypt of custody data under a grant and purpose (no content)."""
    with transaction.atomic():
        audit_record(
            action="custody.decrypt",
            actor=actor,
            organisation=grant.licensee or version.dataset.owner,
            object_type="dataset_version",
            object_id=version.pk,
            details={
                "grant": grant.pk,
                "purpose": grant.purpose,
                "what": what,
                "count": count,
                "consumer_ref": consumer_ref,
            },
        )
