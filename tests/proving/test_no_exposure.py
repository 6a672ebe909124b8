"""Promise 1 over the whole demo: sentinels planted in the corpus are found nowhere they may not be.

The whole demo seed runs (every step of ``manage.py demo_seed``) with unique
sentinel tokens mixed into the support tickets; they survive
desensitization (they are not PII), so custody really holds them, encrypted.
The demo's training job runs on the real Celery worker and its sale settles.
Then ``chaos/exposure.py`` scans every channel, counting what it read:

- http: every GET route (URL resolver and OpenAPI schema, path parameters
  filled with the demo's real ids, enum query parameters such as ``export=csv``
  expanded), as each demo user and anonymous, following the links, ``next``
  pages and redirects the answers hold; downloads (exports, Croissant, the
  artifact, receipts) unpacked;
- database: every column of every table, compressed values inflated; the raw
  SQLite file, or a ``pg_dump`` on Postgres;
- files: blobs, keys, audit exports, mail, logs (the worker's too), training
  work directories, the filesystem broker and the temp directory, archives and
  compressed files unpacked;
- broker: every key and value of the Redis broker and cache databases;
- logs: this process's log records, output and mail.

A hit is allowed only for the provider's own users on its own data views, and
for a sentinel of the approved preview excerpt on the listing views. Each
channel also gets a control sentinel planted in plaintext on purpose (a
gzipped row, a zip in the blob store, a safetensors header in a tar.gz, a
Celery message, a log line); the test fails if the scan misses one.

Figures go to ``var/test-output/proving/exposure-<profile>.json`` for
``chaos/assurance.py``.
"""

from __future__ import annotations

import base64
import gzip
import html
import io
import json
import logging
import re
import secrets
import shutil
import tarfile
import tempfile
import time
import zipfile
from collections import Counter, deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from io import StringIO
from itertools import product
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import redis
from django.conf import settings
from django.core import mail
from django.core.management.base import OutputWrapper
from django.db import connection
from django.test import Client
from django.urls import Resolver404, URLPattern, URLResolver, get_resolver, resolve

import custody.demo
from chaos.exposure import (
    ExposureScan,
    Hit,
    SentinelFinder,
    database_scan,
    dump_sections,
    file_scan,
    pg_dump,
    redis_items,
    scan_buckets,
)
from common.models import ApiToken, Membership, Organisation, User, WebhookEndpoint
from common.processes import wait_until
from custody.demo import DATASET_NAME
from custody.models import Contribution, Dataset, DatasetVersion, UploadPart
from marketplace.models import License, Listing, Offer, Order, RightsAllocation, Settlement
from portal.management.commands.demo_seed import STEPS
from tests.helpers import login_with_otp
from tests.proving.test_hostile_uploads import FIGURES
from training.models import FINAL_STATES, BaseModel, JobState, TrainingJob


@dataclass(frozen=True)
class Profile:
    name: str
    sentinels: int  # planted round robin over the 243 tickets
    variants_per_route: int  # distinct URLs (query strings, pages) followed per route and user
    depth: int  # link-following hops from the enumerated URLs (a list's next page is no hop)
    page_size: int  # lists are also asked for in pages this small, so their pages are followed


QUICK = Profile("quick", sentinels=24, variants_per_route=3, depth=1, page_size=2)
PROOF = Profile("proof", sentinels=240, variants_per_route=25, depth=3, page_size=1)

USERS = ("alice", "bob", "carol", "ops", "audrey", "anonymous")
STAFF = {"ops", "audrey"}  # platform staff sign in with a second factor

# Routes on which the contributing provider's own members see their own records.
PROVIDER_DATA_ROUTES = (
    "data/",
    "api/v1/datasets",
    "api/v1/versions/",
    "api/v1/contributions/",
    # Picking the preview is the provider's own view of its desensitized records.
    "api/v1/catalog/listings/<lst:listing_id>/preview-candidates",
    "market/listings/<lst:listing_id>/preview/",
)
# Routes that show a listing, where the approved preview excerpt is published.
PREVIEW_ROUTES = {
    "api/v1/catalog/listings",
    "api/v1/catalog/listings/<lst:listing_id>",
    "market/catalog/",
    "market/catalog/<lst:listing_id>/",
    "market/listings/",
    "market/listings/<lst:listing_id>/",
    "market/listings/<lst:listing_id>/preview/",
}
# Where the approved excerpt is stored: the listing's row (and its block of a pg_dump).
PREVIEW_STORAGE = {"marketplace_listing.preview", "pg_dump public.marketplace_listing"}
# Downloads and data views the crawl must have fetched (200), or it did not look where it matters.
RELEASED = {  # when the release gate passed the model
    ("bob", "api/v1/training/jobs/<job:job_id>/artifact"),
    ("bob", "api/v1/training/jobs/<job:job_id>/receipt"),
}
MUST_ANSWER = {
    ("bob", "api/v1/catalog/listings/<lst:listing_id>/croissant"),
    ("bob", "market/catalog/<lst:listing_id>/croissant.json"),
    ("bob", "training/jobs/<job:job_id>/"),
    ("bob", "api/v1/training/jobs/<job:job_id>/metrics"),
    ("bob", "api/v1/training/jobs/<job:job_id>"),
    ("alice", "portal/access-log/export/"),
    ("alice", "data/versions/<dsv:version_id>/report/samples/"),
    ("audrey", "console/audit/export/"),
}
# Never requested: signing out would end the crawl's session.
SKIPPED_ROUTES = {"logout/"}
LINK = re.compile(rb"""(?:href|hx-get|src|action|data-url)\s*=\s*["']([^"'#]+)""")
TESTSERVER = "http://testserver"


TAG_LETTERS = "bcdfghjkmnpqrstvwxz"  # letters only: digits read as numbers to the desensitizer
# The index's digits as letters, none of b, c, n, s...: 001 spelled "bbc", masked as an organisation.
INDEX_LETTERS = "fghjkqvwxz"
TAG_DRAWS = 20


def sentinel_set(count: int, tag: str) -> list[str]:
    """``count`` unique tokens ``sentinel-<tag>-<index>``; ``quiet_sentinels`` picks a tag they pass."""
    return [f"sentinel-{tag}-{''.join(INDEX_LETTERS[int(d)] for d in f'{i:03d}')}" for i in range(count)]


def touched(texts: list[str], tokens: list[str]) -> set[str]:
    """The tokens that the default desensitizer masks or the strict detector flags, in any of the texts."""
    from custody.desensitize.core import Desensitizer
    from custody.desensitize.operators import Replacer
    from custody.desensitize.policy import Policy
    from custody.desensitize.strict import strict_scan
    from custody.services.residual import replaced_offsets

    policy, key = Policy.from_dict({}), secrets.token_bytes(32)
    results = Desensitizer(policy, key).desensitize_batch(texts)
    offsets = [
        replaced_offsets(t, r, Replacer(key), policy) or [] for t, r in zip(texts, results, strict=True)
    ]
    hits = strict_scan(
        [r.text for r in results],
        ignore=[[(s, e) for s, e, _ in o] for o in offsets],
        entities=policy.entity_set,
    )
    return {
        token
        for text, result, flagged in zip(texts, results, hits, strict=True)
        for token in tokens
        if covers(token, text, result.spans) or covers(token, result.text, flagged)
    }


def covers(token: str, text: str, spans: Any) -> bool:
    """Whether a span (anything with ``start`` and ``end``) overlaps the token's place in the text."""
    at = text.find(token)
    return at >= 0 and any(s.start < at + len(token) and at < s.end for s in spans)


def quiet_sentinels(count: int) -> tuple[str, list[str]]:
    """A fresh random tag and its sentinels, such that no demo ticket's sentinel is masked or flagged.

    A random tag is now and then read as a name or a place: in the first 24 tickets, 10 of
    150 tags had a sentinel masked by the desensitizer and 1 (``xvcwnmjv``, a place) was
    flagged by the strict detector. A masked sentinel proves nothing, and a flagged one
    raises the demo version's residual-risk estimate above the seal's threshold, so the demo
    stops before sealing: CI failed once so (6% of the 50 sampled records). Such a tag is
    drawn again: over all 243 tickets, 2 of 15 draws for the quick profile's 24 sentinels and
    2 of 5 for the proof's 240.
    """
    for _ in range(TAG_DRAWS):
        tag = "".join(secrets.choice(TAG_LETTERS) for _ in range(8))
        sentinels = sentinel_set(count, tag)
        texts = [r["text"] for r in custody.demo.tickets(sentinels=sentinels)]
        if not touched(texts, sentinels):
            return tag, sentinels
    raise AssertionError(f"{TAG_DRAWS} random tags in a row were read as personal data")


@dataclass
class Controls:
    """A sentinel planted in plaintext on purpose per place; the scan must find each where it was put."""

    tag: str
    planted: dict[str, str] = field(default_factory=dict)  # what -> sentinel

    def new(self, what: str) -> str:
        self.planted[what] = f"control-{self.tag}-{what}"
        return self.planted[what]


# --- the demo, with sentinels ---------------------------------------------------------


@pytest.fixture
def demo_dirs(celery_worker_process, settings):
    """This process on the worker's blob and key directories, so both see the same custody data."""
    settings.BLOB_DIR = Path(celery_worker_process.env["SEALROOM_BLOB_DIR"])
    settings.KEY_DIR = Path(celery_worker_process.env["SEALROOM_KEY_DIR"])
    settings.AUDIT_EXPORT_DIR = Path(celery_worker_process.env["SEALROOM_AUDIT_EXPORT_DIR"])
    # TRAINING_WORK_DIR is left as the environment sets it, the same for the worker.
    return celery_worker_process


def run_demo(sentinels: list[str]) -> str:
    """Every step of ``manage.py demo_seed``, custody's with the sentinels; returns what the steps printed."""
    out = StringIO()
    for name, step in STEPS:
        out.write(f"demo seed: {name}\n")
        if step is custody.demo.seed:
            custody.demo.seed(OutputWrapper(out), sentinels=sentinels)
        else:
            step(OutputWrapper(out))
    return out.getvalue()


def wait_for_training_and_settlement(seed_output: str) -> TrainingJob:
    """The demo job, run by the real worker to the end, and its sale settled by the worker too."""
    job = TrainingJob.objects.first()
    assert job is not None, f"the demo queued no training job:\n{seed_output}"

    def finished() -> TrainingJob | None:
        return TrainingJob.objects.filter(pk=job.pk, state__in=FINAL_STATES).first()

    done = wait_until(finished, what="the demo's training job", timeout=300, interval=0.5)
    assert done is not None  # wait_until returns only something truthy
    # The gate may withhold the demo's model (the listing's default limit of 4 bits over 4 canaries
    # refuses about one model in five that memorised nothing); the job still ran on the data.
    ran = done.state == JobState.SUCCEEDED or done.failure_code == "training.gate_failed"
    assert ran, f"{done.state}: {done.failure_code}: {done.failure_reason}"
    wait_until(Settlement.objects.exists, what="the settlement of the demo sale", timeout=60, interval=0.2)
    return done


# --- http -----------------------------------------------------------------------------


def route_patterns(patterns: list | None = None, prefix: str = "") -> Iterator[str]:
    """Every URL pattern of the project as its route string (regex routes left out: none are ours)."""
    for entry in patterns if patterns is not None else get_resolver().url_patterns:
        route = prefix + str(entry.pattern)
        if isinstance(entry, URLResolver):
            yield from route_patterns(entry.url_patterns, route)
        elif isinstance(entry, URLPattern) and not route.startswith("^") and "(?P" not in route:
            yield route


def path_values() -> dict[str, list[str]]:
    """Real values for each path parameter name: the ids of everything the demo made (public ids where
    the routes take them)."""

    def ids(model: Any, column: str = "pk") -> list[str]:
        return [str(v) for v in model.objects.order_by(column).values_list(column, flat=True)]

    return {
        "listing_id": ids(Listing, "public_id"),
        "offer_id": ids(Offer, "public_id"),
        "allocation_id": ids(RightsAllocation, "public_id"),
        "contribution_id": ids(Contribution, "public_id"),
        "number": sorted({str(n) for n in UploadPart.objects.values_list("number", flat=True)}) or ["1"],
        "dataset_id": ids(Dataset, "public_id"),
        "version_id": ids(DatasetVersion, "public_id"),
        "license_ref": ids(License, "ref"),
        "order_ref": ids(Order, "ref"),
        "org_id": ids(Organisation, "public_id"),
        "membership_id": ids(Membership, "public_id"),
        "webhook_id": ids(WebhookEndpoint, "public_id"),
        "token_id": ids(ApiToken, "public_id"),
        "job_id": ids(TrainingJob, "public_id"),
        "base_id": ids(BaseModel, "public_id"),
    }


def filled(template: str, values: dict[str, list[str]]) -> list[str]:
    """``template`` (``<conv:name>`` or ``{name}``) with every combination of real values (or a stand-in)."""
    names = re.findall(r"<(?:\w+:)?(\w+)>|\{(\w+)\}", template)
    keys = [a or b for a, b in names]
    choices = [values.get(k) or ["1"] for k in keys]
    urls = []
    for combination in product(*choices):
        url = template
        for value in combination:
            url = re.sub(r"<(?:\w+:)?\w+>|\{\w+\}", value, url, count=1)
        urls.append(url if url.startswith("/") else "/" + url)
    return urls


def schema_urls(schema: dict[str, Any], values: dict[str, list[str]], page_size: int) -> list[str]:
    """GET operations of the OpenAPI schema, filled: plain, per enum query value, and in small pages."""
    urls = []
    for template, operations in schema.get("paths", {}).items():
        get = operations.get("get")
        if get is None:
            continue
        for url in filled(template, values):
            urls.append(url)
            for parameter in get.get("parameters", []):
                if parameter.get("in") != "query":
                    continue
                if parameter["name"] == "page_size":
                    urls.append(f"{url}?page_size={page_size}")
                enum = (parameter.get("schema") or {}).get("enum") or []
                urls += [f"{url}?{urlencode({parameter['name']: v})}" for v in enum if v is not None]
    return urls


def is_page(url: str) -> bool:
    """A link to another page of a list (following it is no hop, only a variant of the route)."""
    return "page" in parse_qs(urlsplit(url).query)


def clients(users: dict[str, User]) -> dict[str, Client]:
    """A client per demo user (in ``USERS`` order), signed in as that user would be, and one anonymous."""
    signed: dict[str, Client] = {}
    for name in USERS:
        client = signed[name] = Client(raise_request_exception=False)
        if name in STAFF:
            login_with_otp(client, users[name])
        elif name in users:
            client.force_login(users[name])
    return signed


def body_of(response: Any) -> bytes:
    headers = "".join(f"{k}: {v}\n" for k, v in response.items()).encode()
    if getattr(response, "streaming", False):
        content = b"".join(response.streaming_content)
        response.close()
    else:
        content = response.content
    return headers + b"\n" + content


def links_in(body: bytes) -> Iterator[str]:
    """Site URLs an answer points at: HTML links and htmx sources, JSON URL strings (``next`` too)."""
    for match in LINK.finditer(body):
        yield html.unescape(match.group(1).decode(errors="replace"))
    for match in re.finditer(rb'"((?:http://testserver)?/[^"\s]*)"', body):
        yield match.group(1).decode(errors="replace")


def route_of(url: str) -> str | None:
    try:
        return resolve(urlsplit(url).path).route
    except Resolver404:
        return None


@dataclass
class Crawl:
    """GETs URLs as one user, scans each answer, follows the links it holds (bounded per route)."""

    scan: ExposureScan
    profile: Profile
    requests: int = 0
    pages: int = 0  # requests for a later page of a list
    statuses: Counter[int] = field(default_factory=Counter)
    routes: dict[str, str] = field(default_factory=dict)  # URL requested -> its route
    answered: set[tuple[str, str]] = field(default_factory=set)  # (who, route) that answered 200
    # Routes with no GET handler (405 whoever asks): the first user finds them, the others skip them.
    no_get: set[str] = field(default_factory=set)

    def run(self, who: str, client: Client, seeds: list[str]) -> None:
        enumerated = set(seeds)
        queue = deque((url, 0) for url in seeds)
        seen: set[str] = set()
        per_route: Counter[str] = Counter()
        while queue:
            url, depth = queue.popleft()
            url = url.removeprefix(TESTSERVER)
            route = route_of(url)
            if url in seen or route is None or route in SKIPPED_ROUTES | self.no_get:
                continue
            seen.add(url)
            per_route[route] += 1
            if url not in enumerated and per_route[route] > self.profile.variants_per_route:
                continue
            response = client.get(url)
            self.requests += 1
            self.pages += is_page(url)
            self.statuses[response.status_code] += 1
            if response.status_code == 405:
                self.no_get.add(route)
            elif response.status_code == 200:
                self.answered.add((who, route))
            body = body_of(response)
            self.routes[url] = route
            self.scan.scan("http", url, body, who=who)
            links = [*links_in(body), *([response["Location"]] if response.get("Location") else [])]
            for link in links:
                hop = depth if is_page(link) else depth + 1
                if hop <= self.profile.depth and link not in seen:
                    queue.append((link, hop))


# --- the other channels -----------------------------------------------------------------

CONTROL_FOLDER = "exposure-control"  # in the blob store
CONTROL_ARCHIVE = "exposure-control.tar.gz"  # in the training work directory


def plant_database_controls(controls: Controls) -> None:
    """A scratch table: one plain text row and one gzipped binary row."""
    blob = "bytea" if connection.vendor == "postgresql" else "blob"
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE TABLE exposure_control (id integer PRIMARY KEY, note text, body {blob})")
        cursor.execute(
            "INSERT INTO exposure_control VALUES (1, %s, NULL), (2, NULL, %s)",
            [f"leak {controls.new('db-text')} here", gzip.compress(controls.new("db-gzip").encode())],
        )


def plant_file_controls(controls: Controls) -> None:
    """A zip holding a gzip in the blob store; a tar.gz holding a safetensors file in the work dir."""
    import numpy
    from safetensors.numpy import save

    zipped = Path(settings.BLOB_DIR) / CONTROL_FOLDER / "control.zip"
    zipped.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(zipped, "w") as archive:
        archive.writestr("notes.txt.gz", gzip.compress(f"leak {controls.new('blob-zip')}".encode()))
    weights = save({"w": numpy.zeros(4, dtype="float32")}, metadata={"note": controls.new("artifact")})
    packed = Path(settings.TRAINING_WORK_DIR) / CONTROL_ARCHIVE
    packed.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(packed, "w:gz") as archive:
        info = tarfile.TarInfo("model/adapter.safetensors")
        info.size = len(weights)
        archive.addfile(info, io.BytesIO(weights))


def plant_broker_control(controls: Controls) -> None:
    """A Celery message with the control in its (base64) body, on a queue no worker consumes."""
    from config.celery import app

    queue = f"exposure-control-{controls.tag}"
    app.send_task("exposure.control", kwargs={"note": controls.new("broker")}, queue=queue)


def remove_queue(queue: str) -> None:
    """Delete the control's queue: its Redis keys (messages, bindings), or its message files."""
    from config.celery import app

    url = redis_urls().get("broker")
    if url is None:
        with app.connection_for_write() as conn:
            channel: Any = conn.default_channel
            channel.queue_purge(queue)
        return
    client = redis.Redis.from_url(url)
    try:
        keys = list(client.scan_iter(match=f"*{queue}*"))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


def file_roots(worker) -> list[Path]:
    """The worker's blob, key and audit-export folders and logs, all of var/, the temp directory."""
    return [
        Path(worker.env["SEALROOM_BLOB_DIR"]),
        Path(worker.env["SEALROOM_KEY_DIR"]),
        Path(worker.env["SEALROOM_AUDIT_EXPORT_DIR"]),
        Path(settings.TRAINING_WORK_DIR),
        worker.log_dir,
        Path(settings.VAR_DIR),  # test output, mail, the file cache, the embedded broker
        Path(settings.EMAIL_FILE_PATH),
        Path(tempfile.gettempdir()),
    ]


def database_files() -> list[Path]:
    """The SQLite database's own files (the database channel reads them), none on Postgres."""
    if connection.vendor != "sqlite":
        return []
    name = str(connection.settings_dict["NAME"])
    return [Path(name + suffix) for suffix in ("", "-wal", "-journal", "-shm")]


def redis_urls() -> dict[str, str]:
    from config.celery import app

    urls = {"broker": str(app.conf.broker_url), "cache": str(getattr(settings, "CACHE_URL", ""))}
    return {channel: url for channel, url in urls.items() if url.startswith("redis")}


# --- the scanner on its own ---------------------------------------------------------------


class TestSentinelFinder:
    SENTINEL = "sentinel-qzkwtrvb-bcd"

    def wrapped(self, data: bytes) -> bytes:
        """``data`` gzipped, in a zip, in a tar, gzipped again (a tar.gz artifact holding a zip)."""
        inner = io.BytesIO()
        with zipfile.ZipFile(inner, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            archive.writestr("a/notes.txt.gz", gzip.compress(data))
        outer = io.BytesIO()
        with tarfile.open(fileobj=outer, mode="w:gz") as archive:
            info = tarfile.TarInfo("bundle.zip")
            info.size = len(inner.getvalue())
            archive.addfile(info, io.BytesIO(inner.getvalue()))
        return outer.getvalue()

    @pytest.mark.parametrize(
        "encode",
        [
            lambda s: s.encode(),
            lambda s: s.encode("utf-16-le"),
            lambda s: s.encode().hex().encode(),
            lambda s: base64.b64encode(b"x" + s.encode() + b"y"),
            lambda s: base64.urlsafe_b64encode(b"xy" + s.encode()),
            lambda s: json.dumps(
                {"body": base64.b64encode(json.dumps([[], {"note": s}]).encode()).decode()}
            ).encode(),
        ],
        ids=["utf-8", "utf-16", "hex", "base64", "base64url", "celery-body"],
    )
    def test_finds_each_encoding_inside_nested_archives(self, encode):
        data = b"before " + encode(self.SENTINEL) + b" after"
        finder = SentinelFinder([self.SENTINEL, "sentinel-other-bcf"])
        assert finder.find(data) == {self.SENTINEL}
        assert finder.find(self.wrapped(data)) == {self.SENTINEL}

    def test_finds_nothing_where_there_is_nothing(self):
        finder = SentinelFinder([self.SENTINEL])
        near_misses = self.SENTINEL[:-1].encode() + b" " + self.SENTINEL.upper().encode()
        assert finder.find(self.wrapped(near_misses + secrets.token_bytes(4096))) == set()

    def test_a_bomb_is_read_only_up_to_the_limit(self, monkeypatch):
        monkeypatch.setattr("chaos.exposure.MAX_INFLATED", 1 << 20)
        bomb = gzip.compress(b"\0" * (8 << 20) + self.SENTINEL.encode())
        assert SentinelFinder([self.SENTINEL]).find(bomb) == set()

    def test_pg_dump_sections_are_named_by_table(self):
        dump = b"SET x;\nCOPY public.a (id) FROM stdin;\n1\n\\.\nCOPY public.b (id) FROM stdin;\n2\n"
        assert [name for name, _ in dump_sections(dump)] == [
            "pg_dump",
            "pg_dump public.a",
            "pg_dump public.b",
        ]


class TestQuietSentinels:
    def test_a_tag_read_as_a_place_or_a_name_is_told_apart(self):
        # Tags of the search: xvcwnmjv the strict detector flags as a place, brjkbjns the
        # desensitizer masks as a name; dwxbzpdc neither.
        for tag, expected in (("xvcwnmjv", True), ("brjkbjns", True), ("dwxbzpdc", False)):
            sentinels = sentinel_set(24, tag)
            texts = [r["text"] for r in custody.demo.tickets(count=24, sentinels=sentinels)]
            assert bool(touched(texts, sentinels)) is expected, tag

    def test_the_drawn_sentinels_are_left_alone(self):
        tag, sentinels = quiet_sentinels(24)
        assert all(tag in s for s in sentinels)
        texts = [r["text"] for r in custody.demo.tickets(sentinels=sentinels)]
        assert touched(texts, sentinels) == set()


# --- the test -----------------------------------------------------------------------------


@dataclass
class Run:
    """One scan of the demo: what was planted, what was read, and how long each part took."""

    profile: Profile
    planted: list[str]
    controls: Controls
    scan: ExposureScan
    crawl: Crawl
    phases: dict[str, float] = field(default_factory=dict)
    _clock: float = field(default_factory=time.monotonic)

    def lap(self, name: str) -> None:
        now = time.monotonic()
        self.phases[name] = round(now - self._clock, 1)
        self._clock = now


def scan_http(run: Run) -> None:
    users = {name: User.objects.get(username=name) for name in USERS if name != "anonymous"}
    values = path_values()
    seeds = [url for route in sorted(set(route_patterns())) for url in filled(route, values)]
    schema = json.loads(clients(users)["alice"].get("/api/v1/schema/", {"format": "json"}).content)
    seeds = list(dict.fromkeys([*seeds, *schema_urls(schema, values, run.profile.page_size)]))
    for who, client in clients(users).items():
        run.crawl.run(who, client, seeds)
    run.lap("http")


def scan_at_rest(run: Run, sentinels: list[str], started: float, worker, broker_dir: Path | None) -> None:
    db = database_scan(sentinels)
    run.scan.add("database", db.found, db.rows, db.bytes)
    dump = pg_dump()
    for section, data in dump_sections(dump) if dump is not None else ():
        run.scan.scan("database", section, data)
    run.lap("database")
    if broker_dir is not None:  # kombu's filesystem transport: a folder of message files
        messages = file_scan([broker_dir], sentinels)
        run.scan.add("broker", messages.found, messages.files, messages.bytes)
    for channel, url in redis_urls().items():
        for key, value in redis_items(url):
            run.scan.scan(channel, key, value)
    run.lap("broker")
    # The S3 bucket(s), when blobs or KEK records are configured there (none on the local default).
    if scan_buckets(run.scan):
        run.lap("bucket")
    skip = [*database_files(), *([broker_dir] if broker_dir is not None else [])]
    files = file_scan(file_roots(worker), sentinels, newer_than=started, skip=skip)
    run.scan.add("files", files.found, files.files, files.bytes)
    run.lap("files")


def scan_logs(run: Run, caplog, capfd, seed_output: str) -> None:
    out = capfd.readouterr()
    run.scan.scan("logs", "log records", caplog.text.encode())
    run.scan.scan("logs", "stdout and stderr", (out.out + out.err).encode())
    run.scan.scan("logs", "demo seed output", seed_output.encode())
    for index, message in enumerate(mail.outbox):
        run.scan.scan("logs", f"mail {index}", message.message().as_bytes())


def plant_controls(controls: Controls) -> None:
    plant_database_controls(controls)
    plant_file_controls(controls)
    plant_broker_control(controls)
    logging.getLogger("exposure.control").warning("leak %s", controls.new("log"))


def remove_controls(controls: Controls) -> None:
    """Take every control out again (whichever were planted before a failure)."""
    with connection.cursor() as cursor:
        cursor.execute("DROP TABLE IF EXISTS exposure_control")
    shutil.rmtree(Path(settings.BLOB_DIR) / CONTROL_FOLDER, ignore_errors=True)
    (Path(settings.TRAINING_WORK_DIR) / CONTROL_ARCHIVE).unlink(missing_ok=True)
    remove_queue(f"exposure-control-{controls.tag}")


def is_allowed(hit: Hit, run: Run, provider_users: set[str], preview: set[str]) -> bool:
    """The two exceptions of promise 1: the provider's own data views, and the approved preview."""
    if hit.channel == "http":
        route = run.crawl.routes.get(hit.place, "")
        own = hit.who in provider_users and route.startswith(PROVIDER_DATA_ROUTES)
        return own or (hit.sentinel in preview and route in PREVIEW_ROUTES)
    # The approved excerpt is stored with its listing, so the database's own files and dump hold it too.
    stored = {*PREVIEW_STORAGE, *(str(path) for path in database_files())}
    return hit.channel == "database" and hit.sentinel in preview and hit.place in stored


def must_answer(job: TrainingJob) -> set[tuple[str, str]]:
    return MUST_ANSWER | RELEASED if job.state == JobState.SUCCEEDED else MUST_ANSWER


def telemetry_problems(client: Client, job: TrainingJob) -> list[str]:
    """What the trainer reads of the job's metrics, against docs/threat-model.md's rules.

    Sentinels are strings; a loss curve carries records as numbers (issue 20), so the scan
    checks the numbers' shape too: windowed, rounded, capped, none under DP, gate pass/fail only.
    """
    body = client.get(f"/api/v1/training/jobs/{job.public_id}/metrics").json()
    problems = []
    curve = body.get("loss_curve") or []
    if len(curve) > settings.TRAINING_LOSS_CURVE_POINTS:
        problems.append(f"{len(curve)} loss points, over the cap")
    if job.dp_enabled and curve:
        problems.append("a DP job published a loss curve")
    values = [v for _step, v in curve] + [
        v for row in body.get("metrics", {}).get("validation", []) for k, v in row.items() if k != "epoch"
    ]
    for value in values:
        if value != float(f"{value:.{settings.TRAINING_METRICS_DIGITS}g}"):
            problems.append(f"metric {value!r} carries more than the allowed significant digits")
    if set(body.get("gate") or {}) - {"passed", "reason", "checks"}:
        problems.append(f"the gate shows the trainer {sorted(body['gate'])}")
    return problems


def job_timeline(job: TrainingJob) -> dict[str, float]:
    def between(a: Any, b: Any) -> float:
        return round((b - a).total_seconds(), 1) if a and b else -1.0

    return {
        "queued": between(job.created_at, job.started_at),
        "preparing": between(job.started_at, job.training_started_at),
        "training and gate": between(job.training_started_at, job.finished_at),
    }


def figures_of(
    run: Run, job: TrainingJob, preview: set[str], provider_users: set[str], verdicts: dict[str, list[Hit]]
) -> dict[str, Any]:
    found = {h.sentinel for h in verdicts["controls"]}
    allowed = Counter(f"{h.who} {run.crawl.routes.get(h.place, h.place)}" for h in verdicts["allowed"])
    return {
        "profile": run.profile.name,
        "database": connection.vendor,
        "broker": "redis" if redis_urls().get("broker") else "filesystem",
        **run.scan.figures(),
        "requests": run.crawl.requests,
        "pages_followed": run.crawl.pages,
        "statuses": {str(k): v for k, v in sorted(run.crawl.statuses.items())},
        "users": len(USERS),
        "sentinels_planted": len(run.planted),
        "sentinels_in_preview": len(preview),
        "sentinels_seen_by_provider": len(
            {h.sentinel for h in verdicts["allowed"] if h.who in provider_users}
        ),
        "allowed": dict(sorted(allowed.items())),
        "violations": [
            f"{h.channel} {h.place} as {h.who or '-'}: {h.sentinel}" for h in verdicts["violations"]
        ],
        "not_fetched": sorted(f"{who} {route}" for who, route in must_answer(job) - run.crawl.answered),
        "routes_answered": len({route for _who, route in run.crawl.answered}),
        "routes": len(set(run.crawl.routes.values())),
        "controls_planted": sorted(run.controls.planted),
        "controls_found": sorted(w for w, s in run.controls.planted.items() if s in found),
        "job": {"state": job.state, "failure_code": job.failure_code, **job_timeline(job)},
        "phases": run.phases,
        "seconds": round(sum(run.phases.values()), 1),
    }


def run_and_check(profile: Profile, worker, broker_dir: Path | None, caplog, capfd) -> None:
    started = time.time() - 1
    caplog.set_level(logging.DEBUG)
    tag, planted = quiet_sentinels(profile.sentinels)
    controls = Controls(tag)
    run = Run(
        profile,
        planted,
        controls,
        scan=(scan := ExposureScan(SentinelFinder([]))),
        crawl=Crawl(scan, profile),
    )

    # As ``make run``: the seed first (it runs custody's work itself), then the worker.
    worker.stop()
    seed_output = run_demo(planted)
    worker.start()
    run.lap("demo seed")
    job = wait_for_training_and_settlement(seed_output)
    run.lap("training and settlement")
    listing = Listing.objects.get(version__dataset__name=DATASET_NAME)
    assert listing.preview_approved_at is not None, seed_output
    preview = SentinelFinder(planted).find(json.dumps(listing.preview).encode())
    assert preview, "no planted sentinel reached the approved preview: the plant did not take"

    try:
        plant_controls(controls)
        everything = [*planted, *controls.planted.values()]
        run.scan.finder = SentinelFinder(everything)
        scan_http(run)
        scan_at_rest(run, everything, started, worker, broker_dir)
        scan_logs(run, caplog, capfd, seed_output)
    finally:
        remove_controls(controls)

    provider_users = set(
        Membership.objects.filter(organisation=listing.version.dataset.owner).values_list(
            "user__username", flat=True
        )
    )
    verdicts: dict[str, list[Hit]] = {"controls": [], "allowed": [], "violations": []}
    for hit in run.scan.hits:
        if hit.sentinel in controls.planted.values():
            verdicts["controls"].append(hit)
        elif is_allowed(hit, run, provider_users, preview):
            verdicts["allowed"].append(hit)
        else:
            verdicts["violations"].append(hit)
    figures = figures_of(run, job, preview, provider_users, verdicts)
    bob = Client(raise_request_exception=False)
    bob.force_login(User.objects.get(username="bob"))
    figures["telemetry_problems"] = telemetry_problems(bob, job)
    FIGURES.mkdir(parents=True, exist_ok=True)
    (FIGURES / f"exposure-{profile.name}.json").write_text(json.dumps(figures, indent=1, sort_keys=True))
    print(json.dumps(figures, indent=1))

    assert not verdicts["violations"], "\n".join(figures["violations"][:50])
    assert not figures["not_fetched"], figures["not_fetched"]
    assert not figures["telemetry_problems"], figures["telemetry_problems"]
    assert figures["pages_followed"], "no list was followed past its first page"
    assert figures["controls_found"] == figures["controls_planted"], "the scan missed a control"
    assert figures["sentinels_seen_by_provider"], (
        "the provider's own views showed no sentinel: the scan is blind"
    )
    assert any(h.who == "bob" for h in verdicts["allowed"]), "bob never saw the approved preview"


@pytest.mark.timeout(480)
def test_the_whole_demo_exposes_no_sentinel(demo_dirs, celery_test_broker, caplog, capfd):
    run_and_check(QUICK, demo_dirs, celery_test_broker, caplog, capfd)


@pytest.mark.proof
@pytest.mark.timeout(1800)
def test_the_whole_demo_exposes_no_sentinel_proof(demo_dirs, celery_test_broker, caplog, capfd):
    run_and_check(PROOF, demo_dirs, celery_test_broker, caplog, capfd)
