"""Typed results. Each keeps the server's JSON in ``raw`` for fields this SDK does not name yet.

Amounts are integers in minor units (cents); ``Money`` formats them. Times are
timezone-aware ``datetime`` objects.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from sealroom import _api


def _time(value: Any) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(str(value))


def _int_or_none(value: Any) -> int | None:
    return int(value) if value is not None else None


@dataclass(frozen=True)
class Money:
    """An amount in minor units of ``currency``; ``str()`` gives ``150.00 EUR``."""

    minor: int
    currency: str

    @property
    def major(self) -> Decimal:
        return Decimal(self.minor).scaleb(-_api.minor_digits(self.currency))

    def __str__(self) -> str:
        return f"{self.major:,} {self.currency}"


@dataclass(frozen=True)
class Organisation:
    id: str
    name: str
    slug: str
    role: str
    is_provider: bool
    is_trainer: bool


@dataclass(frozen=True)
class Me:
    """The caller: who the token belongs to, for which organisation, with which scopes."""

    id: str
    username: str
    email: str
    platform_role: str
    organisations: list[Organisation]
    acting_organisation_id: str | None
    token_scopes: list[str] | None
    raw: dict[str, Any] = field(repr=False)

    @property
    def acting_organisation(self) -> Organisation | None:
        return next((o for o in self.organisations if o.id == self.acting_organisation_id), None)

    @classmethod
    def from_api(cls, data: dict[str, Any]) -> Me:
        organisations = [
            Organisation(
                id=m["organisation"]["id"],
                name=m["organisation"]["name"],
                slug=m["organisation"]["slug"],
                role=m["role"],
                is_provider=m["organisation"]["is_provider"],
                is_trainer=m["organisation"]["is_trainer"],
            )
            for m in data.get("memberships", [])
        ]
        return cls(
            id=data["id"],
            username=data["username"],
            email=data.get("email", ""),
            platform_role=data.get("platform_role", ""),
            organisations=organisations,
            acting_organisation_id=data.get("acting_organisation_id"),
            token_scopes=data.get("token_scopes"),
            raw=data,
        )


@dataclass(frozen=True)
class Offer:
    """An offer on a listing: its current license terms and price."""

    id: str
    listing_id: str
    name: str
    state: str
    price_model: str
    unit_price: int
    period_days: int | None
    terms_number: int
    terms: dict[str, Any]
    plain_terms: list[str]
    raw: dict[str, Any] = field(repr=False)

    @classmethod
    def from_api(cls, data: dict[str, Any], currency: str = "EUR") -> Offer:
        current = data.get("current") or {}
        price = current.get("price") or {}
        return cls(
            id=data["id"],
            listing_id=data["listing_id"],
            name=data.get("name", ""),
            state=data.get("state", ""),
            price_model=price.get("model", ""),
            unit_price=_api.money_from_api(price, "unit_price", price.get("currency") or currency),
            period_days=price.get("period_days"),
            terms_number=current.get("number", 0),
            terms=current.get("terms") or {},
            plain_terms=list(current.get("plain") or []),
            raw=data,
        )


@dataclass(frozen=True)
class Listing:
    """A catalog listing, with its active offers (terms and price), in search results too."""

    id: str
    title: str
    provider_id: str
    provider_name: str
    version_id: str
    state: str
    domain_tags: list[str]
    languages: list[str]
    currency: str
    records: int
    platform_tokens: int
    published_at: datetime | None
    description: str
    offers: list[Offer]
    raw: dict[str, Any] = field(repr=False)

    @classmethod
    def from_api(cls, data: dict[str, Any]) -> Listing:
        currency = data.get("currency", "EUR")
        return cls(
            id=data["id"],
            title=data["title"],
            provider_id=data["provider_id"],
            provider_name=data.get("provider_name", ""),
            version_id=data["version_id"],
            state=data.get("state", ""),
            domain_tags=list(data.get("domain_tags") or []),
            languages=list(data.get("languages") or []),
            currency=currency,
            records=data.get("records") or 0,
            platform_tokens=data.get("platform_tokens") or 0,
            published_at=_time(data.get("published_at")),
            description=data.get("description", ""),
            offers=[Offer.from_api(o, currency) for o in data.get("offers") or []],
            raw=data,
        )


@dataclass(frozen=True)
class Quote:
    offer_id: str
    terms_number: int
    amount: Money
    escrow: Money
    price_model: str
    breakdown: str
    raw: dict[str, Any] = field(repr=False)

    @classmethod
    def from_api(cls, data: dict[str, Any]) -> Quote:
        currency = data["currency"]
        return cls(
            offer_id=data["offer_id"],
            terms_number=data["terms_number"],
            amount=Money(_api.money_from_api(data, "amount", currency), currency),
            escrow=Money(_api.money_from_api(data, "escrow", currency), currency),
            price_model=data.get("price_model", ""),
            breakdown=data.get("breakdown", ""),
            raw=data,
        )


@dataclass(frozen=True)
class Order:
    """An order; ``license_ref`` is set once it is paid (a manual approval may come first)."""

    ref: str
    state: str
    offer_id: str
    listing_id: str
    escrow: Money
    license_ref: str | None
    reject_reason: str
    created_at: datetime | None
    paid_at: datetime | None
    raw: dict[str, Any] = field(repr=False)

    @classmethod
    def from_api(cls, data: dict[str, Any]) -> Order:
        currency = data.get("currency", "EUR")
        return cls(
            ref=data["ref"],
            state=data["state"],
            offer_id=data["offer_id"],
            listing_id=data["listing_id"],
            escrow=Money(_api.money_from_api(data, "escrow_amount", currency), currency),
            license_ref=data.get("license_ref"),
            reject_reason=data.get("reject_reason", ""),
            created_at=_time(data.get("created_at")),
            paid_at=_time(data.get("paid_at")),
            raw=data,
        )


@dataclass(frozen=True)
class License:
    """A license (``lic_…``); ``grant_id`` (``gnt_…``) is what the training API calls ``grant``."""

    ref: str
    order_ref: str
    grant_id: str
    version_id: str
    state: str
    expires_at: datetime | None
    escrowed: Money
    released: Money
    refunded: Money
    remaining: dict[str, Any]
    raw: dict[str, Any] = field(repr=False)

    @classmethod
    def from_api(cls, data: dict[str, Any]) -> License:
        currency = data.get("currency", "EUR")

        def money(key: str) -> Money:
            return Money(_api.money_from_api(data, key, currency), currency)

        return cls(
            ref=data["ref"],
            order_ref=data.get("order_ref", ""),
            grant_id=data["grant_id"],
            version_id=data["version_id"],
            state=data.get("state", ""),
            expires_at=_time(data.get("expires_at")),
            escrowed=money("escrowed"),
            released=money("released"),
            refunded=money("refunded"),
            remaining=dict(data.get("remaining") or {}),
            raw=data,
        )


@dataclass(frozen=True)
class Contribution:
    """An upload to a dataset version; ``parts_received`` lets a dropped upload resume."""

    id: str
    version_id: str
    filename: str
    format: str
    state: str
    size_expected: int | None
    size_received: int
    parts_received: list[int]
    records: int
    failure_reason: str
    raw: dict[str, Any] = field(repr=False)

    @classmethod
    def from_api(cls, data: dict[str, Any]) -> Contribution:
        return cls(
            id=data["id"],
            version_id=data["version_id"],
            filename=data.get("filename", ""),
            format=data.get("format", ""),
            state=data["state"],
            size_expected=_int_or_none(data.get("size_expected")),
            size_received=data.get("size_received") or 0,
            parts_received=[int(n) for n in data.get("parts_received") or []],
            records=data.get("records") or 0,
            failure_reason=data.get("failure_reason", ""),
            raw=data,
        )


@dataclass(frozen=True)
class BaseModel:
    """A base model to fine-tune: built in (``gpt2-tiny``…) or uploaded by your organisation."""

    id: str
    name: str
    kind: str
    task: str
    state: str
    raw: dict[str, Any] = field(repr=False)

    @classmethod
    def from_api(cls, data: dict[str, Any]) -> BaseModel:
        return cls(
            id=data["id"],
            name=data["name"],
            kind=data.get("kind", ""),
            task=data.get("task", ""),
            state=data.get("state", ""),
            raw=data,
        )


@dataclass(frozen=True)
class Progress:
    step: int
    total_steps: int
    epoch: int
    loss: float | None
    tokens_per_s: float | None
    eta_s: float | None

    @classmethod
    def from_api(cls, data: dict[str, Any]) -> Progress:
        return cls(
            step=data.get("step") or 0,
            total_steps=data.get("total_steps") or 0,
            epoch=data.get("epoch") or 0,
            loss=data.get("loss"),
            tokens_per_s=data.get("tokens_per_s"),
            eta_s=data.get("eta_s"),
        )


@dataclass(frozen=True)
class JobEvent:
    kind: str
    detail: str
    attempt: int
    at: datetime | None


@dataclass(frozen=True)
class Job:
    """A training job. ``in_gate`` while the release gate checks the artifact."""

    id: str
    state: str
    template: str
    base_id: str
    base_name: str
    license: str  # the license ref (lic_…) the job runs under
    grant_id: str  # the license's custody grant (gnt_…)
    dataset_version_id: str
    progress: Progress
    tokens_trained: int
    failure_code: str
    failure_reason: str
    downloadable: bool
    artifact_files: list[dict[str, Any]]
    events: list[JobEvent]
    raw: dict[str, Any] = field(repr=False)

    @property
    def finished(self) -> bool:
        return self.state in _api.JOB_FINAL_STATES

    @property
    def succeeded(self) -> bool:
        return self.state == "succeeded"

    @property
    def in_gate(self) -> bool:
        return self.state == _api.JOB_GATE_STATE

    @classmethod
    def from_api(cls, data: dict[str, Any]) -> Job:
        base = data.get("base") or {}
        artifact = data.get("artifact") or {}
        return cls(
            id=data["id"],
            state=data["state"],
            template=data.get("template", ""),
            base_id=base.get("id", 0),
            base_name=base.get("name", ""),
            license=data.get("license") or "",
            grant_id=data.get("grant_id") or "",
            dataset_version_id=data.get("dataset_version_id", 0),
            progress=Progress.from_api(data.get("progress") or {}),
            tokens_trained=data.get("tokens_trained") or 0,
            failure_code=data.get("failure_code", ""),
            failure_reason=data.get("failure_reason", ""),
            downloadable=bool(artifact.get("downloadable")),
            artifact_files=list(artifact.get("files") or []),
            events=[
                JobEvent(
                    kind=e.get("kind", ""),
                    detail=e.get("detail", ""),
                    attempt=e.get("attempt", 0),
                    at=_time(e.get("at")),
                )
                for e in data.get("events") or []
            ],
            raw=data,
        )


@dataclass(frozen=True)
class JobMetrics:
    """Validation metrics, the loss curve (a list of points) and the release gate's verdict."""

    job_id: str
    state: str
    metrics: dict[str, Any]
    loss_curve: list[Any]
    gate: dict[str, Any]

    @classmethod
    def from_api(cls, data: dict[str, Any]) -> JobMetrics:
        return cls(
            job_id=data["job"],
            state=data.get("state", ""),
            metrics=dict(data.get("metrics") or {}),
            loss_curve=list(data.get("loss_curve") or []),
            gate=dict(data.get("gate") or {}),
        )


@dataclass(frozen=True)
class VerifiedReceipt:
    """A receipt whose signature checked out against a trusted key (and its archive, when given)."""

    job_id: str
    dataset_version_id: str
    merkle_root: str
    key_id: str
    archive_checked: bool
    receipt: dict[str, Any] = field(repr=False)
