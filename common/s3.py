"""Blobs in an S3-compatible bucket (AWS S3, MinIO, Ceph, R2), through boto3.

Map: ``S3Location`` parses ``SEALROOM_BLOB_URL`` (``s3://bucket/prefix``);
``aws_client`` builds one cached boto3 client per service and configuration
(botocore's "standard" retry mode, a bounded number of attempts);
``S3BlobStore`` is the ``BlobStore``: put (one PUT up to ``PART_BYTES``, else
streamed through ``upload_fileobj`` in multipart parts, the object appearing
at once when complete; an unfinished upload left by an outage is aborted by
the key's next complete put or by ``abandoned_uploads_abort``), streaming open (the ``get_object`` body as a
``BinaryIO``), delete (every version, so a versioned bucket keeps no copy),
exists, ``keys`` (a listing under a prefix) and ``check``;
``describe_aws_error`` turns what botocore raises into one sentence naming
what is wrong (bucket, credentials, endpoint), which ``check`` and ``/healthz``
report. S3 only ever receives what the callers give it: sealed ciphertext.
boto3 is untyped: clients are ``Any`` at this boundary.
"""

from __future__ import annotations

import io
import os
import re
import threading
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, BinaryIO
from urllib.parse import urlsplit

import boto3  # type: ignore[import-untyped]  # boto3 ships no type hints
from boto3.s3.transfer import TransferConfig  # type: ignore[import-untyped]  # untyped
from botocore.config import Config  # type: ignore[import-untyped]  # untyped
from botocore.exceptions import (  # type: ignore[import-untyped]  # untyped
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    PartialCredentialsError,
    ReadTimeoutError,
)

# Parts of 16 MiB: a shard or an upload part of up to 16 MiB is one PUT; larger
# blobs (artifacts, bases, audit exports) go multipart, 4 parts in flight.
PART_BYTES = 16 << 20
TRANSFER = TransferConfig(
    multipart_threshold=PART_BYTES, multipart_chunksize=PART_BYTES, max_concurrency=4, use_threads=True
)
# An unfinished multipart upload this old is abandoned: no artifact or export takes an hour to send.
ABANDONED_UPLOAD_AGE = timedelta(hours=6)
CONNECT_TIMEOUT_SECONDS = 5
READ_TIMEOUT_SECONDS = 60
# The health check and the start-up check try once, quickly: a dead endpoint
# must make /healthz answer in seconds, not after the data path's retries.
PROBE_TIMEOUT_SECONDS = 2

_CREDENTIAL_CODES = {
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "InvalidClientTokenId",
    "UnrecognizedClientException",
    "InvalidSignatureException",
    "ExpiredToken",
    "ExpiredTokenException",
    "IncompleteSignature",
}
_DENIED_CODES = {"AccessDenied", "AccessDeniedException", "Forbidden", "403"}


class ServiceUnavailable(Exception):
    """An external store (S3, KMS) is misconfigured or unreachable; the message names what is wrong."""


@dataclass(frozen=True)
class S3Location:
    bucket: str
    prefix: str

    @classmethod
    def parse(cls, url: str) -> S3Location:
        """``s3://bucket/optional/prefix`` -> location. :raises ValueError: not such a URL."""
        parts = urlsplit(url)
        if parts.scheme != "s3" or not parts.netloc or parts.query or parts.fragment:
            raise ValueError(f"SEALROOM_BLOB_URL must look like s3://bucket/prefix, got {url!r}")
        prefix = parts.path.strip("/")
        return cls(bucket=parts.netloc, prefix=f"{prefix}/" if prefix else "")

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"


_CREDENTIAL_VARIABLES = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE")
_clients: dict[tuple[object, ...], Any] = {}
_clients_lock = threading.Lock()


def aws_client(
    service: str,
    *,
    endpoint_url: str,
    region: str,
    max_attempts: int,
    connect_timeout: float = CONNECT_TIMEOUT_SECONDS,
    read_timeout: float = READ_TIMEOUT_SECONDS,
    credentials: tuple[str, str] | None = None,
) -> Any:
    """A boto3 client (thread-safe, cached per configuration) with bounded standard-mode retries.

    Credentials come from boto3's own chain (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``,
    ``AWS_PROFILE``, an instance role) unless ``credentials`` names a key pair.
    """
    # The environment's credential variables are part of the cache key (no I/O to read them),
    # so a process that changes them gets a new client; a role's credentials refresh by themselves.
    from_env = tuple(os.environ.get(name, "") for name in _CREDENTIAL_VARIABLES)
    cache_key = (
        service,
        endpoint_url,
        region,
        max_attempts,
        connect_timeout,
        read_timeout,
        credentials,
        from_env,
    )
    with _clients_lock:
        client = _clients.get(cache_key)
        if client is None:
            config = Config(
                region_name=region,
                connect_timeout=connect_timeout,
                read_timeout=read_timeout,
                retries={"mode": "standard", "max_attempts": max_attempts},
                max_pool_connections=16,
            )
            keys = (
                {"aws_access_key_id": credentials[0], "aws_secret_access_key": credentials[1]}
                if credentials
                else {}
            )
            session = boto3.session.Session()
            client = session.client(service, endpoint_url=endpoint_url or None, config=config, **keys)
            _clients[cache_key] = client
        return client


_XML_CODE = re.compile(r"<Code>([A-Za-z]+)</Code>")


def error_code(exc: BaseException) -> str:
    """The service's error code; a JSON-protocol client given an XML error body finds it inside."""
    if not isinstance(exc, ClientError):
        return ""
    error = exc.response.get("Error", {})
    code = str(error.get("Code", ""))
    if code.isdigit() and (inner := _XML_CODE.search(str(error.get("Message", "")))):
        return inner.group(1)
    return code


def describe_aws_error(exc: BaseException, *, service: str, endpoint: str, what: str) -> str:
    """One sentence naming what is wrong: the endpoint, the credentials, or ``what`` (bucket, key)."""
    where = endpoint or f"the default {service} endpoint"
    if isinstance(exc, (EndpointConnectionError, ConnectTimeoutError, ReadTimeoutError)):
        return f"{service} endpoint {where} is unreachable ({type(exc).__name__})"
    if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
        return f"no {service} credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE)"
    code = error_code(exc)
    if code == "NoSuchBucket":
        return f"{service}: {what} does not exist at {where}"
    if code in {"NotFoundException", "NotFound"} and service == "KMS":
        return f"KMS key {what} does not exist at {where}"
    if code in _CREDENTIAL_CODES:
        return f"{service} at {where} rejected the credentials ({code})"
    if code in _DENIED_CODES:
        return f"{service} at {where} denied access to {what} ({code}): check the credentials' policy"
    if code in {"DisabledException", "KMSInvalidStateException"}:
        return f"KMS key {what} is disabled or pending deletion ({code})"
    if isinstance(exc, ClientError):
        message = exc.response.get("Error", {}).get("Message", "")
        return f"{service} at {where} refused {what}: {code} {message}".strip()
    return f"{service} at {where} failed for {what}: {type(exc).__name__}: {exc}"


class _BodyReader(io.RawIOBase):
    """A ``get_object`` body as a raw stream, so ``io.BufferedReader`` can serve ``BinaryIO``."""

    def __init__(self, body: Any) -> None:
        self._body = body

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._body.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def readall(self) -> bytes:
        # read() of everything: one call into the body, not RawIOBase's 8 KiB loop.
        return bytes(self._body.read())

    def close(self) -> None:
        if not self.closed:
            self._body.close()
        super().close()


def _read_up_to(data: BinaryIO, limit: int) -> bytes:
    """Up to ``limit`` bytes (fewer only at the end of the stream)."""
    pieces: list[bytes] = []
    left = limit
    while left > 0 and (chunk := data.read(left)):
        pieces.append(chunk)
        left -= len(chunk)
    return b"".join(pieces)


class _CountingReader(io.RawIOBase):
    """The bytes already read (``head``), then the rest of the caller's stream, counted."""

    def __init__(self, head: bytes, data: BinaryIO) -> None:
        self._head = head
        self._data = data
        self.size = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        # A full ``size`` unless the stream ends: s3transfer makes one part of each read,
        # and S3 refuses a part under 5 MiB that is not the last.
        if size < 0:
            chunk, self._head = self._head + self._data.read(), b""
        else:
            chunk, self._head = self._head[:size], self._head[size:]
            if len(chunk) < size:
                chunk += _read_up_to(self._data, size - len(chunk))
        self.size += len(chunk)
        return chunk

    def readinto(self, buffer: Any) -> int:
        chunk = self.read(len(buffer))
        buffer[: len(chunk)] = chunk
        return len(chunk)


class S3BlobStore:
    """Blobs as objects under ``s3://bucket/prefix``; a PUT (or completed multipart upload) is atomic."""

    def __init__(
        self,
        location: S3Location,
        *,
        endpoint_url: str = "",
        region: str = "us-east-1",
        max_attempts: int = 5,
        credentials: tuple[str, str] | None = None,
    ) -> None:
        self.location = location
        self.endpoint_url = endpoint_url
        self._client_args: dict[str, Any] = {
            "endpoint_url": endpoint_url,
            "region": region,
            "credentials": credentials,
        }
        self.client = aws_client("s3", max_attempts=max_attempts, **self._client_args)

    def _key(self, key: str) -> str:
        parts = key.split("/")
        if not key or key.startswith("/") or any(part in {"", ".", ".."} for part in parts):
            raise ValueError(f"blob key escapes the store: {key!r}")
        return self.location.prefix + key

    def put(self, key: str, data: BinaryIO) -> int:
        name = self._key(key)
        head = _read_up_to(data, PART_BYTES + 1)
        if len(head) <= PART_BYTES:
            # One part's worth or less: a single PUT, without a transfer manager's threads.
            self.client.put_object(Bucket=self.location.bucket, Key=name, Body=head)
            return len(head)
        counted = _CountingReader(head, data)
        began = datetime.now(UTC)
        # On a failed part s3transfer aborts the upload, unless the endpoint is gone by then:
        # what an outage leaves unfinished, the next complete put of the key aborts (below),
        # and ``abandoned_uploads_abort`` sweeps what no retry came back for.
        self.client.upload_fileobj(counted, self.location.bucket, name, Config=TRANSFER)
        self._abort_unfinished(name, began_before=began)
        return counted.size

    def _abort_unfinished(self, name: str, *, began_before: datetime) -> list[str]:
        """Abort the unfinished multipart uploads of ``name`` begun before ``began_before``."""
        bucket = self.location.bucket
        aborted = []
        for page in self.client.get_paginator("list_multipart_uploads").paginate(Bucket=bucket, Prefix=name):
            for upload in page.get("Uploads", []):
                if upload["Key"] == name and upload["Initiated"] < began_before:
                    self.client.abort_multipart_upload(Bucket=bucket, Key=name, UploadId=upload["UploadId"])
                    aborted.append(upload["UploadId"])
        return aborted

    def abandoned_uploads_abort(self, *, older_than: timedelta = ABANDONED_UPLOAD_AGE) -> list[str]:
        """Abort every unfinished multipart upload under the prefix begun more than ``older_than`` ago.

        Such an upload is an attempt whose process died or lost the endpoint and never came back
        for the key: S3 keeps (and bills) its parts until aborted. Returns the keys aborted.
        """
        bucket, cutoff = self.location.bucket, datetime.now(UTC) - older_than
        aborted = []
        paginator = self.client.get_paginator("list_multipart_uploads")
        for page in paginator.paginate(Bucket=bucket, Prefix=self.location.prefix):
            for upload in page.get("Uploads", []):
                if upload["Initiated"] < cutoff:
                    self.client.abort_multipart_upload(
                        Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                    )
                    aborted.append(upload["Key"][len(self.location.prefix) :])
        return aborted

    def open(self, key: str) -> BinaryIO:
        """:raises FileNotFoundError: no such blob (as the local store)."""
        try:
            response = self.client.get_object(Bucket=self.location.bucket, Key=self._key(key))
        except ClientError as exc:
            if error_code(exc) in {"NoSuchKey", "404"}:
                raise FileNotFoundError(f"no blob {key!r} in {self.location}") from None
            raise
        return io.BufferedReader(_BodyReader(response["Body"]), buffer_size=1 << 20)

    def delete(self, key: str) -> None:
        """Delete the blob and, in a versioned bucket, every older version of it."""
        name = self._key(key)
        bucket = self.location.bucket
        self.client.delete_object(Bucket=bucket, Key=name)
        try:
            listing = self.client.list_object_versions(Bucket=bucket, Prefix=name)
        except ClientError as exc:
            if error_code(exc) in {"NotImplemented", "MethodNotAllowed"}:
                return  # an S3-compatible server without versioning
            raise
        for entry in [*listing.get("Versions", []), *listing.get("DeleteMarkers", [])]:
            if entry["Key"] == name and entry.get("VersionId") not in (None, "null"):
                self.client.delete_object(Bucket=bucket, Key=name, VersionId=entry["VersionId"])

    def exists(self, key: str) -> bool:
        try:
            self.client.head_object(Bucket=self.location.bucket, Key=self._key(key))
        except ClientError as exc:
            if error_code(exc) in {"404", "NoSuchKey", "NotFound"}:
                return False
            raise
        return True

    def keys(self, prefix: str) -> list[str]:
        """The blob keys under ``prefix`` (a folder of keys, e.g. ``audit-export/checkpoints/``), sorted."""
        start = self._key(prefix.rstrip("/")) + "/"
        found: list[str] = []
        for page in self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.location.bucket, Prefix=start
        ):
            found += [entry["Key"][len(self.location.prefix) :] for entry in page.get("Contents", [])]
        return sorted(found)

    def check(self) -> None:
        """Write, read back and delete a probe object, trying once.

        :raises ServiceUnavailable: naming the missing bucket, the rejected credentials or the
            unreachable endpoint.
        """
        probe = aws_client(
            "s3",
            max_attempts=1,
            connect_timeout=PROBE_TIMEOUT_SECONDS,
            read_timeout=PROBE_TIMEOUT_SECONDS * 2,
            **self._client_args,
        )
        # A probe key of its own: two health checks at once must not delete each other's probe.
        bucket, key = self.location.bucket, f"{self.location.prefix}.health-{uuid.uuid4().hex}"
        try:
            version = probe.put_object(Bucket=bucket, Key=key, Body=b"ok").get("VersionId")
            body = probe.get_object(Bucket=bucket, Key=key)["Body"].read()
            # In a versioned bucket, removing the version itself leaves neither it nor a delete marker.
            probe.delete_object(Bucket=bucket, Key=key, **({"VersionId": version} if version else {}))
        except (BotoCoreError, ClientError) as exc:
            raise ServiceUnavailable(
                describe_aws_error(
                    exc, service="S3", endpoint=self.endpoint_url, what=f"bucket {bucket!r} ({self.location})"
                )
            ) from None
        if body != b"ok":
            raise ServiceUnavailable(f"S3 at {self.endpoint_url or 'AWS'} read back different bytes")


def s3_blob_store_from_settings() -> S3BlobStore:
    from django.conf import settings

    return S3BlobStore(
        S3Location.parse(settings.BLOB_URL),
        endpoint_url=settings.S3_ENDPOINT_URL,
        region=settings.AWS_REGION,
        max_attempts=settings.AWS_MAX_ATTEMPTS,
    )
