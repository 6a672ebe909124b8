"""The ``sealroom`` command: the SDK from a shell.

    sealroom login                                   # paste a token (srk_…); saved for later commands
    sealroom catalog search support
    sealroom catalog show 12                         # offers, terms and prices
    sealroom quote 31
    sealroom order 31                                # prints the license ref (lic_…)
    sealroom upload 7 tickets.jsonl                  # resumable, with a progress bar
    sealroom jobs submit --license lic_… --template causal_lm --base gpt2-tiny --follow
    sealroom artifacts download 42                   # the tar.gz and its receipt, verified
    sealroom receipts verify job-42-receipt.json --artifact job-42.tar.gz

Every command takes ``--token`` and ``--url`` (else SEALROOM_TOKEN / SEALROOM_URL, else
what ``login`` saved). Errors print the server's code, detail and field pointers, and exit 1.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from sealroom import __version__, config
from sealroom.client import Client
from sealroom.errors import ApiError, ReceiptInvalid, SealroomError
from sealroom.models import Job, Listing, Money, Offer
from sealroom.receipts import keys_from_pem, verify_receipt

F = TypeVar("F", bound=Callable[..., Any])

out = Console()
err = Console(stderr=True)

GATE_NOTE = "release gate: canary exposure and verbatim continuations"


def connection_options(func: F) -> F:
    func = click.option(
        "--url", envvar="SEALROOM_URL", help="Server URL (default: SEALROOM_URL, then login's)."
    )(func)
    return click.option("--token", envvar="SEALROOM_TOKEN", help="API token (default: SEALROOM_TOKEN).")(func)


def json_option(func: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")(func)


def make_client(token: str | None, url: str | None) -> Client:
    return Client(token=token, base_url=url)


def print_json(value: Any) -> None:
    def default(obj: Any) -> Any:
        if is_dataclass(obj) and not isinstance(obj, type):
            return {k: v for k, v in asdict(obj).items() if k != "raw"}
        return str(obj)

    click.echo(json.dumps(value, indent=2, default=default, ensure_ascii=False))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="sealroom")
def cli() -> None:
    """Sealroom from the command line: catalog, orders, uploads, training jobs, receipts."""


# --- identity --------------------------------------------------------------------------------


@cli.command()
@click.option("--token", help="The API token (srk_…); asked for when missing.")
@click.option("--url", envvar="SEALROOM_URL", help="Server URL.", default=None)
def login(token: str | None, url: str | None) -> None:
    """Check a token and save it (with the URL) for later commands."""
    token = token or click.prompt("API token", hide_input=True)
    client = make_client(token, url)
    me = client.whoami()
    path = config.store(token=token, base_url=client.base_url)
    acting = me.acting_organisation
    out.print(
        f"Signed in to {client.base_url} as [bold]{me.username}[/bold]"
        + (f" for {acting.name}" if acting else "")
        + f" (scopes: {', '.join(me.token_scopes or [])}). Saved to {path}."
    )


@cli.command()
def logout() -> None:
    """Forget the saved token."""
    out.print("Signed out." if config.forget() else "No saved token.")


@cli.command()
@connection_options
@json_option
def whoami(token: str | None, url: str | None, as_json: bool) -> None:
    """Who the token acts as: user, organisation, role and scopes."""
    me = make_client(token, url).whoami()
    if as_json:
        print_json(me.raw)
        return
    acting = me.acting_organisation
    out.print(f"[bold]{me.username}[/bold] <{me.email}>")
    if acting:
        kinds = [k for k, on in (("provider", acting.is_provider), ("trainer", acting.is_trainer)) if on]
        out.print(f"organisation: {acting.name} (id {acting.id}, {acting.role}; {', '.join(kinds) or '-'})")
    out.print(f"scopes: {', '.join(me.token_scopes or []) or '(session)'}")


# --- catalog ---------------------------------------------------------------------------------


@cli.group()
def catalog() -> None:
    """Search and read the catalog."""


@catalog.command("search")
@click.argument("query", required=False, default="")
@click.option("--tag")
@click.option("--language")
@click.option("--price-model", type=click.Choice(["fixed", "metered", "period"]))
@click.option("--limit", type=int, default=50, show_default=True)
@connection_options
@json_option
def catalog_search(
    query: str,
    tag: str | None,
    language: str | None,
    price_model: str | None,
    limit: int,
    token: str | None,
    url: str | None,
    as_json: bool,
) -> None:
    """Search published listings."""
    listings = make_client(token, url).search_catalog(
        query, tag=tag, language=language, price_model=price_model, limit=limit
    )
    if as_json:
        print_json([listing.raw for listing in listings])
        return
    table = Table("id", "title", "provider", "records", "platform tokens", "tags", "offers (id: price)")
    for item in listings:
        table.add_row(
            str(item.id),
            item.title,
            item.provider_name,
            f"{item.records:,}",
            f"{item.platform_tokens:,}",
            ", ".join(item.domain_tags),
            "\n".join(f"{offer.id}: {_offer_price(offer, item.currency)}" for offer in item.offers),
        )
    out.print(table if listings else "No listing matches.")


def _offer_price(offer: Offer, currency: str) -> str:
    price = str(Money(offer.unit_price, currency))
    if offer.price_model == "metered":
        return price + " per million tokens"
    if offer.price_model == "period":
        return price + f" per {offer.period_days} days"
    return price


def _print_listing(listing: Listing) -> None:
    out.print(f"[bold]{listing.title}[/bold] (listing {listing.id}, by {listing.provider_name})")
    if listing.description:
        out.print(listing.description)
    out.print(f"{listing.records:,} records, {listing.platform_tokens:,} platform tokens; {listing.state}")
    table = Table("offer", "name", "price", "terms")
    for offer in listing.offers:
        price = _offer_price(offer, listing.currency)
        table.add_row(str(offer.id), offer.name, price, "\n".join(offer.plain_terms))
    out.print(table if listing.offers else "No offers.")


@catalog.command("show")
@click.argument("listing_id")
@connection_options
@json_option
def catalog_show(listing_id: str, token: str | None, url: str | None, as_json: bool) -> None:
    """A listing with its offers (terms and prices)."""
    listing = make_client(token, url).get_listing(listing_id)
    if as_json:
        print_json(listing.raw)
    else:
        _print_listing(listing)


# --- quote and order -------------------------------------------------------------------------


@cli.command()
@click.argument("offer_id")
@click.option("--tokens", type=int, help="Platform tokens (metered offers; default: the cap).")
@click.option("--periods", type=int, help="Periods (per-period offers; default 1).")
@connection_options
@json_option
def quote(
    offer_id: str, tokens: int | None, periods: int | None, token: str | None, url: str | None, as_json: bool
) -> None:
    """What an offer would cost (nothing is reserved)."""
    result = make_client(token, url).quote(offer_id, tokens=tokens, periods=periods)
    if as_json:
        print_json(result.raw)
        return
    out.print(f"{result.amount} ({result.price_model}; escrowed at order: {result.escrow})")
    if result.breakdown:
        out.print(result.breakdown)


@cli.command()
@click.argument("offer_id")
@click.option("--periods", type=int, help="Periods to buy (per-period offers).")
@click.option(
    "--idempotency-key",
    help="Reuse a key to make a retry from another process safe (default: a fresh one per command).",
)
@connection_options
@json_option
def order(
    offer_id: str,
    periods: int | None,
    idempotency_key: str | None,
    token: str | None,
    url: str | None,
    as_json: bool,
) -> None:
    """Buy a license on an offer, paid into escrow from your balance (idempotent)."""
    placed = make_client(token, url).order(offer_id, periods=periods, idempotency_key=idempotency_key)
    if as_json:
        print_json(placed.raw)
        return
    out.print(f"order {placed.ref}: {placed.state}, {placed.escrow} in escrow")
    if placed.license_ref:
        out.print(f"license: [bold]{placed.license_ref}[/bold]")
    else:
        out.print("No license yet: the provider approves this order first (`sealroom orders show`).")


@cli.group()
def orders() -> None:
    """Your orders."""


@orders.command("show")
@click.argument("ref")
@connection_options
def orders_show(ref: str, token: str | None, url: str | None) -> None:
    """One order (state, escrow, license)."""
    print_json(make_client(token, url).get_order(ref).raw)


@cli.group()
def licenses() -> None:
    """Your licenses."""


@licenses.command("list")
@connection_options
@json_option
def licenses_list(token: str | None, url: str | None, as_json: bool) -> None:
    """Licenses your organisation holds and what each has left."""
    items = make_client(token, url).list_licenses()
    if as_json:
        print_json([item.raw for item in items])
        return
    table = Table("license", "state", "version", "grant", "expires", "left")
    for item in items:
        left = ", ".join(f"{k} {v}" for k, v in item.remaining.items() if v is not None)
        expires = item.expires_at.date().isoformat() if item.expires_at else "-"
        table.add_row(item.ref, item.state, item.version_id, item.grant_id, expires, left)
    out.print(table if items else "No licenses.")


# --- upload ----------------------------------------------------------------------------------


@cli.command()
@click.argument("version_id")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--format", "fmt", type=click.Choice(["jsonl", "csv", "text_lines", "text_documents", "parquet"])
)
@click.option("--text-field", "text_fields", multiple=True, help="A field to desensitize (default: text).")
@click.option("--metadata-field", "metadata_fields", multiple=True, help="A field kept as metadata.")
@click.option("--part-size", default="8M", show_default=True, help="Bytes per part: 8M, 512K, 65536.")
@click.option("--contribution", "contribution_id", help="Resume this upload (its id, ctb_…).")
@click.option("--no-resume", is_flag=True, help="Start a new upload even if one of this file is open.")
@connection_options
def upload(
    version_id: str,
    path: Path,
    fmt: str | None,
    text_fields: tuple[str, ...],
    metadata_fields: tuple[str, ...],
    part_size: str,
    contribution_id: str | None,
    no_resume: bool,
    token: str | None,
    url: str | None,
) -> None:
    """Upload a corpus file to a dataset version, in parts; run it again to resume a dropped upload."""
    client = make_client(token, url)
    with _transfer_bar() as bar:
        task = bar.add_task(path.name, total=path.stat().st_size)
        result = client.upload(
            version_id,
            path,
            format=fmt,
            text_fields=list(text_fields) or None,
            metadata_fields=list(metadata_fields) or None,
            part_size=_size(part_size),
            resume=not no_resume,
            contribution_id=contribution_id,
            on_progress=lambda done, total: bar.update(task, completed=done, total=total),
        )
    out.print(f"upload {result.id}: {result.state} ({result.size_received:,} bytes); ingest started")


def _size(text: str) -> int:
    units = {"K": 1024, "M": 1024**2, "G": 1024**3}
    raw = text.strip().upper().removesuffix("B").removesuffix("I")
    factor = units.get(raw[-1:], 1)
    digits = raw[:-1] if raw[-1:] in units else raw
    if not digits.isdigit() or int(digits) < 1:
        raise click.BadParameter(f"{text!r} is not a size (8M, 512K, 65536)", param_hint="--part-size")
    return int(digits) * factor


def _transfer_bar() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=err,
    )


# --- jobs ------------------------------------------------------------------------------------


@cli.group()
def jobs() -> None:
    """Submit and follow training jobs."""


def _hyperparameters(pairs: tuple[str, ...], from_file: Path | None) -> dict[str, Any]:
    values: dict[str, Any] = json.loads(from_file.read_text()) if from_file else {}
    for pair in pairs:
        name, sep, raw = pair.partition("=")
        if not sep:
            raise click.BadParameter(f"{pair!r}: use NAME=VALUE", param_hint="--hp")
        try:
            values[name] = json.loads(raw)
        except ValueError:
            values[name] = raw
    return values


@jobs.command("submit")
@click.option("--license", "license_ref", required=True, help="A license ref (lic_…) or the order's ref.")
@click.option("--template", required=True, help="causal_lm, causal_lm_lora, seq_classification…")
@click.option("--base", required=True, help="A base model's name (gpt2-tiny) or id.")
@click.option("--hp", "hp_pairs", multiple=True, help="A hyperparameter: NAME=VALUE (JSON values).")
@click.option(
    "--hyperparameters", "hp_file", type=click.Path(exists=True, path_type=Path), help="A JSON file."
)
@click.option("--dp-epsilon", type=float, help="Train with DP-SGD to this epsilon.")
@click.option("--label-field", default="", help="Classification: the metadata field with the label.")
@click.option("--purpose", default="", help="One of the license's purposes.")
@click.option("--follow", is_flag=True, help="Then follow the job until it ends.")
@click.option(
    "--idempotency-key",
    help="Reuse a key to make a retry from another process safe (default: a fresh one per command).",
)
@connection_options
def jobs_submit(
    license_ref: str,
    template: str,
    base: str,
    hp_pairs: tuple[str, ...],
    hp_file: Path | None,
    dp_epsilon: float | None,
    label_field: str,
    purpose: str,
    follow: bool,
    idempotency_key: str | None,
    token: str | None,
    url: str | None,
) -> None:
    """Submit a fine-tune job under a license (idempotent: a retry spends no second job)."""
    client = make_client(token, url)
    job = client.submit_job(
        license=license_ref,
        template=template,
        base=base,
        hyperparameters=_hyperparameters(hp_pairs, hp_file),
        dp={"enabled": True, "target_epsilon": dp_epsilon} if dp_epsilon is not None else None,
        label_field=label_field,
        purpose=purpose,
        idempotency_key=idempotency_key,
    )
    out.print(f"job [bold]{job.id}[/bold]: {job.state} ({job.template} on {job.base_name})")
    out.print(f"under license {job.license}")
    if follow:
        _follow(client, job.id)


@jobs.command("follow")
@click.argument("job_id")
@click.option("--interval", type=float, default=2.0, show_default=True, help="Seconds between polls.")
@connection_options
def jobs_follow(job_id: str, interval: float, token: str | None, url: str | None) -> None:
    """Follow a job live: progress, loss, throughput, the release gate; exit 1 if it fails."""
    _follow(make_client(token, url), job_id, interval)


def _stage(job: Job) -> str:
    if job.in_gate:
        return GATE_NOTE
    if job.state == "running" and job.progress.total_steps == 0:
        return "running: opening the custody stream"
    return job.state


def _follow(client: Client, job_id: str, interval: float = 2.0) -> None:
    bar = Progress(
        TextColumn("job {task.fields[job]}"),
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[steps]}"),
        TextColumn("loss {task.fields[loss]}"),
        TextColumn("{task.fields[speed]}"),
        console=err,
    )

    def update(job: Job) -> None:
        progress = job.progress
        total = progress.total_steps or None
        step = progress.step if not job.in_gate else (progress.total_steps or progress.step)
        bar.update(
            task,
            description=_stage(job),
            total=total,
            completed=step,
            steps=f"step {step}/{total}" if total else "",
            loss=f"{progress.loss:.4f}" if progress.loss is not None else "-",
            speed=f"{progress.tokens_per_s:,.0f} tok/s" if progress.tokens_per_s else "",
        )

    with bar:
        task = bar.add_task("queued", total=None, job=job_id, steps="", loss="-", speed="")
        job = client.follow_job(job_id, interval=interval, on_update=update, raise_on_failure=False)
    if not job.succeeded:
        err.print(f"[red]job {job.id} {job.state}[/red] {job.failure_code}: {job.failure_reason}")
        sys.exit(1)
    metrics = client.job_metrics(job_id)
    gate = metrics.gate
    out.print(
        f"job {job.id} succeeded: {job.tokens_trained:,} platform tokens trained"
        + (f", final loss {job.progress.loss:.4f}" if job.progress.loss is not None else "")
        + ("; release gate passed" if gate.get("passed") else "")
    )
    if job.downloadable:
        out.print(f"download: sealroom artifacts download {job.id}")


@jobs.command("show")
@click.argument("job_id")
@connection_options
def jobs_show(job_id: str, token: str | None, url: str | None) -> None:
    """A job's state, progress, failure and events (JSON)."""
    print_json(make_client(token, url).get_job(job_id).raw)


@jobs.command("list")
@connection_options
def jobs_list(token: str | None, url: str | None) -> None:
    """Your organisation's jobs."""
    table = Table("job", "state", "template", "base", "license", "step", "loss")
    for job in make_client(token, url).list_jobs(limit=100):
        loss = f"{job.progress.loss:.4f}" if job.progress.loss is not None else "-"
        table.add_row(
            str(job.id),
            job.state,
            job.template,
            job.base_name,
            job.license,
            str(job.progress.step),
            loss,
        )
    out.print(table)


# --- artifacts and receipts ------------------------------------------------------------------


@cli.group()
def artifacts() -> None:
    """Trained models."""


@artifacts.command("download")
@click.argument("job_id")
@click.option("-o", "--output", type=click.Path(file_okay=False, path_type=Path), default=Path("."))
@click.option("--no-verify", is_flag=True, help="Skip checking the receipt and the archive's files.")
@connection_options
def artifacts_download(
    job_id: str, output: Path, no_verify: bool, token: str | None, url: str | None
) -> None:
    """Download a job's model (tar.gz) and receipt, and verify both against the platform's keys."""
    client = make_client(token, url)
    with _transfer_bar() as bar:
        task = bar.add_task(f"job-{job_id}.tar.gz", total=None)
        archive = client.download_artifact(
            job_id,
            output,
            verify=not no_verify,
            on_progress=lambda done, total: bar.update(task, completed=done, total=total),
        )
    out.print(f"saved {archive} and {archive.parent / f'job-{job_id}-receipt.json'}")
    if not no_verify:
        out.print("[green]receipt valid[/green]: signed by the platform, every file matches")


@cli.group()
def receipts() -> None:
    """Training receipts."""


@receipts.command("verify")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--artifact", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--public-key",
    "pem_paths",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Trust this PEM public key (repeatable). Offline.",
)
@click.option(
    "--keys",
    "keys_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Trust the keys in this file (/api/v1/audit/keys JSON; `sealroom keys export`). Offline.",
)
@connection_options
def receipts_verify(
    path: Path,
    artifact: Path | None,
    pem_paths: tuple[Path, ...],
    keys_path: Path | None,
    token: str | None,
    url: str | None,
) -> None:
    """Verify a receipt's signature (and with --artifact, the archive's files); exit 1 if invalid.

    Without --public-key or --keys, the platform's published keys are fetched first.
    """
    if pem_paths or keys_path:
        keys = keys_from_pem(*(p.read_text() for p in pem_paths))
        if keys_path:
            keys.update(_keys_file(keys_path))
    else:
        keys = make_client(token, url).public_keys()
    result = verify_receipt(path, keys, artifact=artifact)
    out.print(
        f"[green]receipt valid[/green]: job {result.job_id}, dataset version {result.dataset_version_id} "
        f"(merkle root {result.merkle_root}), signed by key {result.key_id}"
        + (", archive matches" if result.archive_checked else ""),
        soft_wrap=True,  # one line, however long the ids: scripts grep it
    )


def _keys_file(path: Path) -> dict[str, str]:
    data = json.loads(path.read_text())
    return {k["key_id"]: k["public_key_pem"] for k in data.get("keys", [])}


@cli.group()
def keys() -> None:
    """The platform's public signing keys."""


@keys.command("export")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="Default: stdout.")
@connection_options
def keys_export(output: Path | None, token: str | None, url: str | None) -> None:
    """Save the platform's public keys, to verify receipts offline later (`receipts verify --keys`)."""
    found = make_client(token, url).public_keys()
    text = json.dumps(
        {"keys": [{"key_id": k, "public_key_pem": v} for k, v in sorted(found.items())]}, indent=2
    )
    if output:
        output.write_text(text)
        out.print(f"saved {len(found)} key(s) to {output}")
    else:
        click.echo(text)


# --- entry point -----------------------------------------------------------------------------


def report(error: SealroomError) -> None:
    """Print an error as the server said it: code, detail, and each field's pointer."""
    if isinstance(error, ApiError):
        err.print(f"[red]Error {error.status}[/red] {error.code}: {error.detail}", highlight=False)
        for field in error.errors:
            err.print(f"  {field.pointer}: {field.detail} ({field.code})", highlight=False)
    elif isinstance(error, ReceiptInvalid):
        err.print("[red]receipt NOT valid[/red]", highlight=False)
        for problem in error.problems:
            err.print(f"  {problem}", highlight=False)
    else:
        err.print(f"[red]Error[/red] {error}", highlight=False)


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; SDK errors exit 1 with the server's problem, usage errors 2."""
    try:
        cli.main(args=argv, prog_name="sealroom", standalone_mode=False)
    except click.exceptions.Abort:
        err.print("Aborted.")
        sys.exit(1)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except SealroomError as exc:
        report(exc)
        sys.exit(1)
