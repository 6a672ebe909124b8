"""``Client``: the Sealroom API as Python calls.

    client = Client()                                   # SEALROOM_TOKEN, SEALROOM_URL
    listing = client.search_catalog("support")[0]
    offer = client.get_listing(listing.id).offers[0]
    order = client.order(offer.id)                      # Idempotency-Key sent for you
    job = client.submit_job(license=order.license_ref, template="causal_lm", base="gpt2-tiny")
    job = client.follow_job(job.id)
    archive = client.download_artifact(job.id)          # and its receipt, verified

Map of the module: identity and tokens; catalog and quotes; orders and licenses;
uploads (resumable); training jobs; artifacts and receipts.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx

from sealroom import __version__, _api, config
from sealroom._http import Transport, new_idempotency_key
from sealroom.errors import ConfigurationError, JobFailed, NotFound, ValidationError
from sealroom.models import (
    BaseModel,
    Contribution,
    Job,
    JobMetrics,
    License,
    Listing,
    Me,
    Order,
    Quote,
    VerifiedReceipt,
)
from sealroom.receipts import verify_receipt

DEFAULT_PART_SIZE = 8 * 1024**2
LICENSE_PREFIX = "lic_"
GRANT_PREFIX = "gnt_"
# A base model's public id; anything else passed as a base is taken as its name.
_BASE_ID = re.compile(r"base_[0-9a-f]{16}")


class Client:
    """A client for one Sealroom server, acting with one API token.

    ``token`` and ``base_url`` default to ``SEALROOM_TOKEN`` and ``SEALROOM_URL``, then to
    what ``sealroom login`` saved. A token acts for the organisation it was made for.
    """

    def __init__(
        self,
        token: str | None = None,
        base_url: str | None = None,
        *,
        timeout: float = 60.0,
        max_retries: int = 5,
        max_retry_wait: float = 60.0,
        http: httpx.Client | None = None,
    ) -> None:
        self.base_url = config.resolve_url(base_url)
        if not self.base_url.startswith(("http://", "https://")):
            raise ConfigurationError(f"base_url must start with http:// or https:// (got {self.base_url!r})")
        self.token = config.resolve_token(token)
        self._transport = Transport(
            base_url=self.base_url,
            token=self.token,
            timeout=timeout,
            max_retries=max_retries,
            max_retry_wait=max_retry_wait,
            user_agent=f"sealroom-python/{__version__}",
            http=http,
        )

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._transport.close()

    @property
    def retries(self) -> int:
        """How many times this client retried a request (rate limits, dropped connections)."""
        return self._transport.retries

    # --- plumbing ---------------------------------------------------------------------------

    def _need_token(self) -> None:
        if not self.token:
            raise ConfigurationError(
                "No API token: pass token=, set SEALROOM_TOKEN, or run `sealroom login`."
            )

    def _get(self, path: str, params: dict[str, Any] | None = None) -> Any:
        self._need_token()
        return self._transport.request("GET", path, params=params).json()

    def _post(self, path: str, body: Any = None, *, idempotency_key: str | None = None) -> Any:
        self._need_token()
        response = self._transport.request("POST", path, json_body=body, idempotency_key=idempotency_key)
        return response.json() if response.content else None

    def _pages(
        self, path: str, params: dict[str, Any] | None = None, limit: int | None = None
    ) -> Iterator[Any]:
        """Items of a paginated list, page after page (``limit`` stops early)."""
        query = dict(params or {})
        query.setdefault("page_size", 100 if limit is None else min(limit, 200))
        page = 1
        seen = 0
        while True:
            data = self._get(path, {**query, "page": page})
            for item in data.get("results", []):
                yield item
                seen += 1
                if limit is not None and seen >= limit:
                    return
            if not data.get("next"):
                return
            page += 1

    # --- identity ---------------------------------------------------------------------------

    def whoami(self) -> Me:
        """The caller: user, organisations, and the token's organisation and scopes."""
        return Me.from_api(self._get(_api.ME))

    def public_keys(self) -> dict[str, str]:
        """The platform's published signing keys (key id -> PEM), from ``/audit/keys`` (public)."""
        data = self._transport.request("GET", _api.AUDIT_KEYS).json()
        return {k["key_id"]: k["public_key_pem"] for k in data.get("keys", [])}

    # --- catalog ----------------------------------------------------------------------------

    def search_catalog(
        self,
        query: str = "",
        *,
        tag: str | None = None,
        language: str | None = None,
        price_model: str | None = None,
        provider: str | None = None,
        limit: int | None = 50,
    ) -> list[Listing]:
        """Published listings matching ``query``, each with its active offers and their prices."""
        params: dict[str, Any] = {
            "q": query or None,
            "tag": tag,
            "language": language,
            "price_model": price_model,
            "provider": provider,
        }
        return [Listing.from_api(item) for item in self._pages(_api.LISTINGS, params, limit)]

    def get_listing(self, listing_id: str) -> Listing:
        """A listing with its statistics, preview and offers (terms and prices)."""
        return Listing.from_api(self._get(_api.LISTING.format(listing_id=listing_id)))

    def quote(self, offer_id: str, *, tokens: int | None = None, periods: int | None = None) -> Quote:
        """What a usage would cost under the offer's current terms (nothing is reserved)."""
        return Quote.from_api(
            self._get(_api.OFFER_QUOTE.format(offer_id=offer_id), {"tokens": tokens, "periods": periods})
        )

    # --- orders and licenses ----------------------------------------------------------------

    def order(
        self, offer_id: str, *, periods: int | None = None, idempotency_key: str | None = None
    ) -> Order:
        """Buy a license: escrowed from your balance. Idempotent: retries reuse one key.

        Pass your own ``idempotency_key`` to make a retry across processes safe too: the
        same key within 24 hours returns the first order instead of placing another.
        """
        body: dict[str, Any] = {"offer_id": offer_id}
        if periods is not None:
            body["periods"] = periods
        key = idempotency_key or new_idempotency_key()
        return Order.from_api(self._post(_api.ORDERS, body, idempotency_key=key))

    def get_order(self, ref: str) -> Order:
        return Order.from_api(self._get(_api.ORDER.format(ref=ref)))

    def list_orders(self, *, limit: int | None = None) -> list[Order]:
        return [Order.from_api(item) for item in self._pages(_api.ORDERS, limit=limit)]

    def get_license(self, ref: str) -> License:
        """A license (``lic_…``): what it has left, and the grant id (``gnt_…``) behind it."""
        return License.from_api(self._get(_api.LICENSE.format(ref=ref)))

    def list_licenses(self, *, limit: int | None = None) -> list[License]:
        return [License.from_api(item) for item in self._pages(_api.LICENSES, limit=limit)]

    def grant_id_for(self, license: str) -> str:
        """The custody grant id (``gnt_…``) behind a license ref or an order ref (a grant id is one already).

        Deprecated: jobs take the license ref now (``license_ref_for``). Grant ids are opaque
        public ids; the integer ids of earlier releases name nothing.
        """
        if not isinstance(license, str) or license.isdigit():
            raise ValueError(
                f"expected a license ref (lic_…), an order ref or a grant id (gnt_…), got {license!r}"
            )
        if license.startswith(GRANT_PREFIX):
            return license
        return self.get_license(self.license_ref_for(license)).grant_id

    def license_ref_for(self, license: str) -> str:
        """The license ref (``lic_…``) a job runs under, from a license ref (as is) or an order ref."""
        if license.startswith(LICENSE_PREFIX):
            return license
        order = self.get_order(license)
        if order.license_ref is None:
            raise ValidationError(
                status=422,
                code="sdk.order_not_licensed",
                detail=f"Order {license} is {order.state}: it has no license yet.",
            )
        return order.license_ref

    def balances(self) -> list[dict[str, Any]]:
        return list(self._get(_api.BALANCES))

    # --- uploads ----------------------------------------------------------------------------

    def start_upload(
        self,
        version_id: str,
        *,
        filename: str,
        size: int,
        format: str | None = None,
        text_fields: list[str] | None = None,
        metadata_fields: list[str] | None = None,
    ) -> Contribution:
        body = _api.contribution_body(
            filename=filename,
            size=size,
            format=format,
            text_fields=text_fields,
            metadata_fields=metadata_fields,
        )
        return Contribution.from_api(
            self._post(_api.VERSION_CONTRIBUTIONS.format(version_id=version_id), body)
        )

    def get_upload(self, contribution_id: str) -> Contribution:
        """An upload, with the parts the server holds (to resume)."""
        return Contribution.from_api(self._get(_api.CONTRIBUTION.format(contribution_id=contribution_id)))

    def put_part(self, contribution_id: str, number: int, data: bytes) -> dict[str, Any]:
        """Send one part (1-based); sending a part again replaces it."""
        self._need_token()
        path = _api.CONTRIBUTION_PART.format(contribution_id=contribution_id, number=number)
        response = self._transport.request("PUT", path, content=data, content_type="application/octet-stream")
        result: dict[str, Any] = response.json()
        return result

    def complete_upload(self, contribution_id: str) -> Contribution:
        """Finish an upload: ingest (desensitization, screening, encryption) starts."""
        path = _api.CONTRIBUTION_COMPLETE.format(contribution_id=contribution_id)
        return Contribution.from_api(self._post(path))

    def upload(
        self,
        version_id: str,
        path: str | os.PathLike[str],
        *,
        format: str | None = None,
        text_fields: list[str] | None = None,
        metadata_fields: list[str] | None = None,
        part_size: int = DEFAULT_PART_SIZE,
        resume: bool = True,
        contribution_id: str | None = None,
        on_progress: Callable[[int, int], None] | None = None,
    ) -> Contribution:
        """Upload a corpus file to a dataset version in parts, resuming a dropped upload.

        With ``resume`` the SDK remembers the upload (under ``~/.cache/sealroom/uploads``)
        and, called again for the same file and version, asks the server which parts it
        holds and sends only the others. ``on_progress(done_bytes, total_bytes)`` is
        called after each part. Returns the completed contribution (ingest started).
        """
        source = Path(path)
        size = source.stat().st_size
        if size == 0:
            raise ConfigurationError(f"{source} is empty: there is nothing to upload.")
        record = _ResumeRecord(self.base_url, version_id, source, size) if resume else None
        contribution = self._upload_target(
            version_id, source, size, record, contribution_id, format, text_fields, metadata_fields, part_size
        )
        part_size = record.part_size if record and record.part_size else part_size
        held = set(contribution.parts_received)
        count = -(-size // part_size)
        done = sum(min(part_size, size - (n - 1) * part_size) for n in held if 1 <= n <= count)
        if contribution.size_received != done:
            # The parts held were cut at another size: sending ours would corrupt the file.
            raise ConfigurationError(
                f"Upload {contribution.id} holds parts {sorted(held)} ({contribution.size_received} bytes), "
                f"which do not match parts of {part_size} bytes: resume it with the part size it began with."
            )
        if on_progress:
            on_progress(done, size)
        with source.open("rb") as handle:
            for number in range(1, count + 1):
                if number in held:
                    continue
                handle.seek((number - 1) * part_size)
                data = handle.read(part_size)
                self.put_part(contribution.id, number, data)
                done += len(data)
                if on_progress:
                    on_progress(done, size)
        completed = self.complete_upload(contribution.id)
        if record:
            record.forget()
        return completed

    def _upload_target(
        self,
        version_id: str,
        source: Path,
        size: int,
        record: _ResumeRecord | None,
        contribution_id: str | None,
        format: str | None,
        text_fields: list[str] | None,
        metadata_fields: list[str] | None,
        part_size: int,
    ) -> Contribution:
        """The upload to continue (given, or remembered and still open), else a new one."""
        remembered = contribution_id or (record.contribution_id() if record else None)
        if remembered is not None:
            try:
                existing = self.get_upload(remembered)
            except NotFound:
                existing = None
            if existing is not None and existing.state == "uploading":
                return existing
            if contribution_id is not None:
                state = existing.state if existing else "gone"
                raise ConfigurationError(f"Upload {contribution_id} cannot be resumed: it is {state}.")
        contribution = self.start_upload(
            version_id,
            filename=source.name,
            size=size,
            format=format,
            text_fields=text_fields,
            metadata_fields=metadata_fields,
        )
        if record:
            record.remember(contribution.id, part_size)
        return contribution

    # --- training ---------------------------------------------------------------------------

    def list_bases(self) -> list[BaseModel]:
        """Built-in base models and your organisation's uploads."""
        return [BaseModel.from_api(item) for item in self._pages(_api.BASES)]

    def base_id_for(self, base: str) -> str:
        """A base model's id (``base_…``) from its name (``gpt2-tiny``), as the job endpoint wants an id."""
        if _BASE_ID.fullmatch(base):
            return base
        matches = [b for b in self.list_bases() if b.name == base]
        if not matches:
            raise ValidationError(
                status=422,
                code="sdk.base_unknown",
                detail=f"No base model named {base!r} (see list_bases()).",
            )
        # An organisation's own upload of the same name wins over a built-in.
        return sorted(matches, key=lambda b: b.kind == "builtin")[0].id

    def submit_job(
        self,
        *,
        license: str,
        template: str,
        base: str,
        hyperparameters: dict[str, Any] | None = None,
        dp: dict[str, Any] | None = None,
        label_field: str = "",
        purpose: str = "",
        idempotency_key: str | None = None,
    ) -> Job:
        """Submit a fine-tune job under a license: its ref (``lic_…``, from ``order``) or the order's.

        ``base`` is a base model's name or id. The job is queued; ``follow_job`` watches it.
        Idempotent: an ``Idempotency-Key`` is made for the call (or pass your own, to make a retry
        across processes safe too), so a retried submit returns the same job and spends one
        job of the license, not two.
        """
        body = _api.job_body(
            license_ref=self.license_ref_for(license),
            template=template,
            base_id=self.base_id_for(base),
            hyperparameters=dict(hyperparameters or {}),
            dp=dp,
            label_field=label_field,
            purpose=purpose,
        )
        key = idempotency_key or new_idempotency_key()
        return Job.from_api(self._post(_api.JOBS, body, idempotency_key=key))

    def submit_mixed_job(
        self,
        *,
        licenses: Sequence[tuple[str, str | int | float]],
        template: str,
        base: str,
        hyperparameters: dict[str, Any] | None = None,
        dp: dict[str, Any] | None = None,
        label_field: str = "",
        purpose: str = "",
        weights_leave: bool = False,
        idempotency_key: str | None = None,
    ) -> Job:
        """Submit a job that mixes several licenses' versions: ``licenses`` is (license or order
        ref, weight) pairs, e.g. ``[("lic_…", 70), ("lic_…", 30)]``; weights are relative.

        The platform admits it only if every license allows it (a 422 names each conflicting term
        of each license); each license is billed the tokens read from its own version.
        ``weights_leave`` asks for a downloadable model (refused where a license keeps weights).
        """
        body = _api.job_body(
            license_ref="",
            template=template,
            base_id=self.base_id_for(base),
            hyperparameters=dict(hyperparameters or {}),
            dp=dp,
            label_field=label_field,
            purpose=purpose,
        )
        del body["license"]
        body["licenses"] = [
            {"license": self.license_ref_for(ref), "weight": str(weight)} for ref, weight in licenses
        ]
        body["weights_leave"] = weights_leave
        key = idempotency_key or new_idempotency_key()
        return Job.from_api(self._post(_api.JOBS, body, idempotency_key=key))

    def get_job(self, job_id: str) -> Job:
        return Job.from_api(self._get(_api.JOB.format(job_id=job_id)))

    def list_jobs(self, *, limit: int | None = None) -> list[Job]:
        return [Job.from_api(item) for item in self._pages(_api.JOBS, limit=limit)]

    def cancel_job(self, job_id: str) -> Job:
        return Job.from_api(self._post(_api.JOB_CANCEL.format(job_id=job_id)))

    def job_metrics(self, job_id: str) -> JobMetrics:
        """Validation metrics, the loss curve and the release gate's verdict."""
        return JobMetrics.from_api(self._get(_api.JOB_METRICS.format(job_id=job_id)))

    def follow_job(
        self,
        job_id: str,
        *,
        interval: float = 2.0,
        timeout: float | None = None,
        on_update: Callable[[Job], None] | None = None,
        raise_on_failure: bool = True,
    ) -> Job:
        """Poll a job until it ends, calling ``on_update`` with each new state of it.

        :raises JobFailed: it failed or was cancelled (unless ``raise_on_failure=False``).
        :raises TimeoutError: ``timeout`` seconds passed first.
        """
        deadline = time.monotonic() + timeout if timeout is not None else None
        last: dict[str, Any] | None = None
        while True:
            job = self.get_job(job_id)
            if on_update and job.raw != last:
                on_update(job)
            last = job.raw
            if job.finished:
                if raise_on_failure and not job.succeeded:
                    raise JobFailed(job.id, job.state, job.failure_code, job.failure_reason)
                return job
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} is still {job.state} after {timeout}s")
            time.sleep(interval)

    # --- models in custody: plug-in inference (issue 16) ---------------------------------------

    def infer(
        self,
        model: str,
        prompts: list[str],
        *,
        task: str = "generate",
        max_new_tokens: int = 32,
        interval: float = 0.5,
        timeout: float | None = 300.0,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        """Call a custody model you hold a license for (``task``: ``generate`` or ``classify``) and
        wait for the answer: the call resource, with ``outputs`` (a withheld one says so).

        :raises TimeoutError: ``timeout`` seconds passed first (the call goes on; poll it by id).
        """
        body: dict[str, Any] = {"prompts": list(prompts)}
        if task == "generate":
            body["max_new_tokens"] = max_new_tokens
        call: dict[str, Any] = self._post(f"/models/{model}/{task}", body, idempotency_key=idempotency_key)
        deadline = time.monotonic() + timeout if timeout is not None else None
        while call["state"] in ("queued", "running"):
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"inference call {call['id']} is still {call['state']} after {timeout}s")
            time.sleep(interval)
            call = self._get(f"/models/calls/{call['id']}")
        return call

    # --- artifacts and receipts -------------------------------------------------------------

    def get_receipt(self, job_id: str) -> dict[str, Any]:
        """The job's signed receipt document (see ``verify_receipt``)."""
        document: dict[str, Any] = self._get(_api.JOB_RECEIPT.format(job_id=job_id))
        return document

    def download_artifact(
        self,
        job_id: str,
        directory: str | os.PathLike[str] = ".",
        *,
        verify: bool = True,
        on_progress: Callable[[int, int | None], None] | None = None,
    ) -> Path:
        """Download the trained model (``job-<id>.tar.gz``) and its receipt (``job-<id>-receipt.json``).

        With ``verify`` (the default) the receipt's signature is checked against the
        platform's published keys and every file of the archive against the receipt.
        :raises ReceiptInvalid: verification failed (the files are kept, for inspection).
        """
        self._need_token()
        target = Path(directory)
        target.mkdir(parents=True, exist_ok=True)
        archive = target / f"job-{job_id}.tar.gz"
        partial = archive.with_suffix(".gz.part")
        with self._transport.stream(_api.JOB_ARTIFACT.format(job_id=job_id)) as response:
            total = int(response.headers["Content-Length"]) if "Content-Length" in response.headers else None
            done = 0
            with partial.open("wb") as out:
                for chunk in response.iter_bytes(1 << 20):
                    out.write(chunk)
                    done += len(chunk)
                    if on_progress:
                        on_progress(done, total)
        partial.replace(archive)
        receipt = self.get_receipt(job_id)
        receipt_path = target / f"job-{job_id}-receipt.json"
        receipt_path.write_text(json.dumps(receipt, indent=2, ensure_ascii=False), encoding="utf-8")
        if verify:
            self.verify_receipt(receipt, artifact=archive)
        return archive

    def verify_receipt(
        self,
        document: dict[str, Any] | str | os.PathLike[str],
        *,
        artifact: str | os.PathLike[str] | None = None,
        public_keys: dict[str, str] | None = None,
    ) -> VerifiedReceipt:
        """Verify a receipt against the platform's published keys (fetched unless given).

        :raises ReceiptInvalid: see ``sealroom.receipts.verify_receipt``.
        """
        source = document if isinstance(document, dict) else Path(document)
        keys = public_keys if public_keys is not None else self.public_keys()
        return verify_receipt(source, keys, artifact=Path(artifact) if artifact is not None else None)


class _ResumeRecord:
    """Which upload a file was going to, so a second run resumes it (a small JSON file)."""

    def __init__(self, base_url: str, version_id: str, source: Path, size: int) -> None:
        stat = source.stat()
        identity = f"{base_url}|{version_id}|{source.resolve()}|{size}|{stat.st_mtime_ns}"
        self.path = (
            config.cache_dir() / "uploads" / f"{hashlib.sha256(identity.encode()).hexdigest()[:32]}.json"
        )
        self.part_size: int | None = None

    def _read(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def contribution_id(self) -> str | None:
        data = self._read()
        # A record written before public ids (an integer) names nothing any more: start afresh.
        if not isinstance(data.get("contribution_id"), str):
            return None
        self.part_size = data.get("part_size") if isinstance(data.get("part_size"), int) else None
        return str(data["contribution_id"])

    def remember(self, contribution_id: str, part_size: int) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps({"contribution_id": contribution_id, "part_size": part_size}))
        self.part_size = part_size

    def forget(self) -> None:
        self.path.unlink(missing_ok=True)
