"""Shard write/read throughput through ``S3BlobStore`` against raw boto3 on the same bytes.

    .venv/bin/python bench/blobs.py [--shards 48] [--shard-mb 1] [--rounds 5] [--seed 11]
                                    [--endpoint URL --bucket NAME]

Without ``--endpoint`` it starts moto's S3 server (``python -m moto.server``)
on a free loopback port and makes a throwaway bucket; with one it uses that
server (MinIO, AWS: the standard AWS variables give the credentials) and a
bucket you name, writing under a fresh ``bench-<random>/`` prefix and deleting
what it wrote. Shards are ``--shard-mb`` MiB of seeded random bytes (they
stand for sealed shards: ciphertext does not compress). Each round times
raw ``put_object`` against ``S3BlobStore.put`` on every shard, then raw
``get_object(...).read()`` against ``S3BlobStore.open(...).read()``; the two sides
take turns shard by shard (who goes first alternating), so the drift of a
shared machine hits both. Printed: MiB/s per side per round, the median of
the rounds, and the ratio store/raw (goal >= 0.8). Reads are checked byte for
byte. Both sides use one client configuration (standard retries, the same pool). Figures
only: nothing asserts a timing. Report ``uptime``'s load average with them.
"""

from __future__ import annotations

import argparse
import io
import os
import random
import statistics
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")


def start_moto() -> tuple[subprocess.Popen[bytes], str]:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1):  # noqa: S310 - loopback
                return process, endpoint
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise SystemExit("moto server did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shards", type=int, default=48)
    parser.add_argument("--shard-mb", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--endpoint", default="")
    parser.add_argument("--bucket", default="")
    args = parser.parse_args()

    process = None
    endpoint, bucket = args.endpoint, args.bucket
    if not endpoint:
        os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
        os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
        process, endpoint = start_moto()
        bucket = f"bench-{uuid.uuid4().hex[:10]}"
    elif not bucket:
        raise SystemExit("--endpoint needs --bucket")
    try:
        run(args, endpoint, bucket, create=process is not None)
    finally:
        if process is not None:
            process.terminate()
            process.wait(timeout=10)


def run(args: argparse.Namespace, endpoint: str, bucket: str, *, create: bool) -> None:
    import django

    django.setup()
    from common.s3 import S3BlobStore, S3Location

    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    store = S3BlobStore(S3Location.parse(f"s3://{bucket}/{prefix}/store"), endpoint_url=endpoint)
    raw = store.client  # the same client configuration for both sides
    if create:
        raw.create_bucket(Bucket=bucket)
    size = int(args.shard_mb * (1 << 20))
    rng = random.Random(args.seed)
    shards = [rng.randbytes(size) for _ in range(args.shards)]
    total = size * args.shards
    raw_keys = [f"{prefix}/raw/shards/{i:06d}" for i in range(args.shards)]
    store_keys = [f"shards/{i:06d}" for i in range(args.shards)]

    def raw_put(i: int) -> None:
        raw.put_object(Bucket=bucket, Key=raw_keys[i], Body=shards[i])

    def store_put(i: int) -> None:
        store.put(store_keys[i], io.BytesIO(shards[i]))

    def raw_get(i: int) -> None:
        assert raw.get_object(Bucket=bucket, Key=raw_keys[i])["Body"].read() == shards[i]

    def store_get(i: int) -> None:
        with store.open(store_keys[i]) as handle:
            assert handle.read() == shards[i]

    print(f"endpoint {endpoint}, bucket {bucket}: {args.shards} shards of {size} bytes, seed {args.seed}")
    print(f"load average before: {os.getloadavg()}")
    rates: dict[str, list[float]] = {"raw put": [], "store put": [], "raw get": [], "store get": []}
    for number in range(1, args.rounds + 1):
        # Shard by shard, the two sides take turns (who goes first alternates), so the
        # noise of a shared machine falls on both alike.
        for side, pair in (("put", (raw_put, store_put)), ("get", (raw_get, store_get))):
            spent = {"raw": 0.0, "store": 0.0}
            for i in range(args.shards):
                order = (("raw", pair[0]), ("store", pair[1]))
                for name, job in order if (i + number) % 2 else order[::-1]:
                    started = time.perf_counter()
                    job(i)
                    spent[name] += time.perf_counter() - started
            for name, seconds in spent.items():
                rates[f"{name} {side}"].append(total / (1 << 20) / seconds)
        line = ", ".join(f"{label} {values[-1]:.1f}" for label, values in rates.items())
        print(f"round {number} (MiB/s): {line}")
    print("median of rounds:")
    for side in ("put", "get"):
        ours, reference = statistics.median(rates[f"store {side}"]), statistics.median(rates[f"raw {side}"])
        print(
            f"  {side}: S3BlobStore {ours:.1f} MiB/s, raw boto3 {reference:.1f} MiB/s,"
            f" ratio {ours / reference:.2f} (goal >= 0.8)"
        )
    print(f"load average after: {os.getloadavg()}")
    for key in raw_keys:
        raw.delete_object(Bucket=bucket, Key=key)
    for key in store_keys:
        store.delete(key)


if __name__ == "__main__":
    main()
