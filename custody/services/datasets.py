"""Datasets, versions, contributors and chunked, resumable uploads."""

from __future__ import annotations

import hashlib
import io
from decimal import Decimal

from django.conf import settings
from django.db import transaction
from django.db.models import Sum
from django.utils.text import slugify

from common.audit import audit_record
from common.blobs import blob_store
from common.exceptions import FieldError
from common.models import Membership, Organisation, Role, User
from common.notifications import notify_event
from common.permissions import role_at_least
from custody.crypto import blob_open, blob_seal
from custody.exceptions import Conflict, Invalid, NotFound, NotPermitted
from custody.models import (
    Contribution,
    ContributionState,
    Dataset,
    DatasetVersion,
    UploadPart,
    VersionContributor,
    VersionState,
)
from custody.parsing import Format, detect_format, sanitize_filename
from custody.services._keys import quarantine_key, quarantine_key_create, version_keys_create


def require_role(actor: User, organisation: Organisation, needed: str) -> None:
    """:raises NotFound: not a member. :raises NotPermitted: role too low."""
    membership = Membership.objects.filter(user=actor, organisation=organisation).first()
    if membership is None:
        raise NotFound("No such organisation.", code="common.organisation_not_found")
    if not role_at_least(membership.role, needed):
        raise NotPermitted(
            f"This needs the '{needed}' role in {organisation.name}.", code="common.role_insufficient"
        )


def _validated_policy(policy: object) -> dict[str, object]:
    from custody.desensitize import Policy

    if policy in (None, {}):
        return Policy().to_dict()
    if not isinstance(policy, dict):
        raise Invalid(
            "The policy must be an object.",
            code="custody.policy_invalid",
            errors=[{"pointer": "/policy", "code": "invalid", "detail": "Expected an object."}],
        )
    return Policy.from_dict(policy).to_dict()


@transaction.atomic
def dataset_create(
    *, actor: User, organisation: Organisation, name: str, description: str = "", policy: object = None
) -> Dataset:
    """Create a dataset owned by a provider organisation.

    :raises NotPermitted: not a provider, or role below member. :raises Invalid: bad name or policy.
    """
    require_role(actor, organisation, Role.MEMBER)
    if not organisation.is_provider:
        raise NotPermitted("Only provider organisations own datasets.", code="custody.not_a_provider")
    name = name.strip()
    slug = slugify(name)[:64]
    if not slug:
        raise Invalid(
            "Name the dataset.",
            code="custody.dataset_invalid",
            errors=[{"pointer": "/name", "code": "required", "detail": "Name the dataset."}],
        )
    if Dataset.objects.filter(owner=organisation, slug=slug).exists():
        raise Conflict(
            f"{organisation.name} already has a dataset named {name!r}.", code="custody.dataset_exists"
        )
    dataset = Dataset.objects.create(
        owner=organisation,
        name=name,
        slug=slug,
        description=description,
        policy=_validated_policy(policy),
        created_by=actor,
    )
    audit_record(
        action="custody.dataset_create",
        actor=actor,
        organisation=organisation,
        object_type="dataset",
        object_id=dataset.pk,
        details={"name": name},
    )
    return dataset


@transaction.atomic
def version_create(*, actor: User, dataset: Dataset, epsilon_cap: Decimal | None = None) -> DatasetVersion:
    """Open a new version for uploads; it gets its own keys.

    :raises NotPermitted: role below member. :raises Invalid: non-positive epsilon cap.
    """
    require_role(actor, dataset.owner, Role.MEMBER)
    if epsilon_cap is not None and epsilon_cap <= 0:
        raise Invalid(
            "The epsilon cap must be positive.",
            code="custody.epsilon_invalid",
            errors=[{"pointer": "/epsilon_cap", "code": "out_of_range", "detail": "Must be > 0."}],
        )
    locked = Dataset.objects.select_for_update().get(pk=dataset.pk)
    number = (locked.versions.order_by("-number").values_list("number", flat=True).first() or 0) + 1
    version = DatasetVersion.objects.create(
        dataset=locked, number=number, epsilon_cap=epsilon_cap, created_by=actor
    )
    version_keys_create(version)
    version.save(update_fields=["wrapped_data_key", "wrapped_pseudonym_key"])
    VersionContributor.objects.create(version=version, organisation=dataset.owner, invited_by=actor)
    audit_record(
        action="custody.version_create",
        actor=actor,
        organisation=dataset.owner,
        object_type="dataset_version",
        object_id=version.pk,
        details={"dataset": dataset.pk, "number": number, "epsilon_cap": str(epsilon_cap or "")},
    )
    return version


@transaction.atomic
def contributor_invite(
    *, actor: User, version: DatasetVersion, organisation: Organisation
) -> VersionContributor:
    """Let another provider organisation contribute records to a version (owner admins only)."""
    require_role(actor, version.dataset.owner, Role.ADMIN)
    if version.state != VersionState.UPLOADING:
        raise Conflict(
            "Contributors can only join a version that is still open.", code="custody.version_closed"
        )
    if not organisation.is_provider:
        raise Invalid("Only provider organisations contribute data.", code="custody.not_a_provider")
    contributor, created = VersionContributor.objects.get_or_create(
        version=version, organisation=organisation, defaults={"invited_by": actor}
    )
    if created:
        audit_record(
            action="custody.contributor_invite",
            actor=actor,
            organisation=version.dataset.owner,
            object_type="dataset_version",
            object_id=version.pk,
            details={"contributor": organisation.pk, "contributor_name": organisation.name},
        )
        notify_event(
            organisation=organisation,
            kind="dataset.contribution_invited",
            subject=f"{version.dataset.owner.name} invited you to contribute to {version.dataset.name}",
            payload={
                "dataset": version.dataset.public_id,
                "version": version.public_id,
                "owner": version.dataset.owner.name,
            },
            object_type="dataset_version",
            object_id=version.public_id,
        )
    return contributor


def _field_list(value: object, pointer: str) -> tuple[str, ...]:
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) and v for v in value):
        raise Invalid(
            "Expected a list of field names.",
            code="custody.fields_invalid",
            errors=[{"pointer": pointer, "code": "invalid", "detail": "Expected a list of field names."}],
        )
    return tuple(value)


@transaction.atomic
def contribution_start(
    *,
    actor: User,
    organisation: Organisation,
    version: DatasetVersion,
    filename: str,
    format: str | None = None,
    text_fields: object = ("text",),
    metadata_fields: object = (),
    size_expected: int | None = None,
) -> Contribution:
    """Start an upload to a version for the actor's organisation.

    :raises NotFound: the organisation may not contribute. :raises Conflict: version closed.
    :raises UnsupportedFormat: format unknown. :raises TooLarge: declared size over the limit.
    """
    require_role(actor, organisation, Role.MEMBER)
    if not VersionContributor.objects.filter(version=version, organisation=organisation).exists():
        raise NotFound("No such dataset version.", code="custody.version_not_found")
    locked = DatasetVersion.objects.select_for_update().get(pk=version.pk)
    if locked.state != VersionState.UPLOADING:
        raise Conflict(
            f"Version {locked.number} is {locked.get_state_display().lower()}; it takes no uploads.",
            code="custody.version_closed",
        )
    safe_name = sanitize_filename(filename)
    fmt, is_gzip = detect_format(safe_name, format, b"")
    texts = _field_list(text_fields, "/text_fields")
    metas = _field_list(metadata_fields, "/metadata_fields") if metadata_fields else ()
    if fmt in (Format.TEXT_LINES, Format.TEXT_DOCUMENTS):
        texts, metas = ("text",), ()
    errors: list[FieldError] = []
    if set(texts) & set(metas):
        errors.append(
            {
                "pointer": "/metadata_fields",
                "code": "overlap",
                "detail": "A field cannot be text and metadata.",
            }
        )
    if size_expected is not None and not 0 < size_expected <= settings.UPLOAD_MAX_BYTES:
        from common.exceptions import TooLarge

        raise TooLarge(
            f"Uploads are limited to {settings.UPLOAD_MAX_BYTES} bytes.", code="custody.upload_too_large"
        )
    if errors:
        raise Invalid(errors[0]["detail"], code="custody.fields_invalid", errors=errors)
    contribution = Contribution.objects.create(
        version=locked,
        contributor=organisation,
        uploaded_by=actor,
        filename=safe_name,
        format=fmt.value,
        gzip=is_gzip,
        text_fields=list(texts),
        metadata_fields=list(metas),
        size_expected=size_expected,
    )
    quarantine_key_create(contribution)
    contribution.save(update_fields=["wrapped_quarantine_key"])
    audit_record(
        action="custody.upload_start",
        actor=actor,
        organisation=organisation,
        object_type="contribution",
        object_id=contribution.pk,
        details={"version": locked.pk, "filename": safe_name, "format": fmt.value, "gzip": is_gzip},
    )
    return contribution


def _part_aad(contribution: Contribution, number: int) -> bytes:
    return f"sealroom/quarantine-part/v1|contribution={contribution.pk}|part={number}".encode()


def part_blob_key(contribution: Contribution, number: int) -> str:
    return f"quarantine/{contribution.pk}/part-{number:06d}"


def contribution_part_put(*, contribution: Contribution, number: int, data: bytes) -> UploadPart:
    """Store one part of an upload, encrypted under the quarantine key as it arrives.

    Re-sending a part (after a dropped connection) replaces it. :raises Conflict:
    the upload is already complete. :raises TooLarge: the total would pass the limit.
    """
    from common.exceptions import TooLarge

    if not 1 <= number <= 100_000:
        raise Invalid(
            "Part numbers run from 1 to 100000.",
            code="custody.part_invalid",
            errors=[
                {"pointer": "/part", "code": "out_of_range", "detail": "Part numbers run from 1 to 100000."}
            ],
        )
    if not data:
        raise Invalid("A part cannot be empty.", code="custody.part_empty")
    if contribution.state != ContributionState.UPLOADING:
        raise Conflict("This upload is already complete.", code="custody.upload_complete")
    others = contribution.parts.exclude(number=number).aggregate(total=Sum("size"))["total"] or 0
    if others + len(data) > settings.UPLOAD_MAX_BYTES:
        raise TooLarge(
            f"Uploads are limited to {settings.UPLOAD_MAX_BYTES} bytes.", code="custody.upload_too_large"
        )
    key = quarantine_key(contribution)
    sealed = blob_seal(key=key, aad=_part_aad(contribution, number), plaintext=data)
    blob_key = part_blob_key(contribution, number)
    blob_store().put(blob_key, io.BytesIO(sealed))
    with transaction.atomic():
        locked = Contribution.objects.select_for_update().get(pk=contribution.pk)
        if locked.state != ContributionState.UPLOADING:
            raise Conflict("This upload is already complete.", code="custody.upload_complete")
        part, _ = UploadPart.objects.update_or_create(
            contribution=locked,
            number=number,
            defaults={"size": len(data), "sha256": hashlib.sha256(data).hexdigest(), "blob_key": blob_key},
        )
        total = locked.parts.aggregate(total=Sum("size"))["total"] or 0
        Contribution.objects.filter(pk=locked.pk).update(size_received=total)
    return part


class _PartsReader(io.RawIOBase):
    """A read-only stream over the decrypted parts, one part in memory at a time."""

    def __init__(self, contribution: Contribution) -> None:
        self.contribution = contribution
        self.key = quarantine_key(contribution)
        self.parts = list(contribution.parts.order_by("number"))
        self.current = b""
        self.offset = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        while self.offset >= len(self.current):
            if not self.parts:
                return 0
            part = self.parts.pop(0)
            with blob_store().open(part.blob_key) as handle:
                sealed = handle.read()
            self.current = blob_open(
                key=self.key,
                aad=_part_aad(self.contribution, part.number),
                blob=sealed,
                what=f"Upload part {part.number}",
            )
            self.offset = 0
        n = min(len(buffer), len(self.current) - self.offset)
        buffer[:n] = self.current[self.offset : self.offset + n]
        self.offset += n
        return n


def raw_reader(contribution: Contribution) -> io.BufferedReader:
    """The uploaded bytes, decrypted one part at a time in memory (never on disk)."""
    return io.BufferedReader(_PartsReader(contribution), buffer_size=1 << 20)
