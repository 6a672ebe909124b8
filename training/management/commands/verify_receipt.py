"""Verify a training job's signed receipt offline, and optionally the model archive it names."""

from __future__ import annotations

import hashlib
import json
import tarfile
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from common.signing import signing_key_provider
from training.model_card import CARD_NAME
from training.receipts import canonical, receipt_problems


def archive_problems(receipt: dict[str, Any], archive: Path) -> list[str]:
    """Files of the model archive that differ from the receipt's list (names, sizes, sha256)."""
    expected = {f["name"]: f for f in receipt.get("artifact_files", [])}
    found: dict[str, dict[str, Any]] = {}
    card = ""
    receipt_digest = hashlib.sha256(canonical(receipt)).hexdigest()
    with tarfile.open(archive, mode="r:*") as tar:
        for member in tar:
            if not member.isfile():
                continue
            handle = tar.extractfile(member)
            if handle is None:
                continue
            data = handle.read()
            name = member.name.rsplit("/", 1)[-1]
            found[name] = {"name": name, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
            if name == CARD_NAME:
                card = data.decode("utf-8", errors="replace")
    problems = [f"{name}: missing from the archive" for name in sorted(set(expected) - set(found))]
    # The model card is written after the receipt is signed (it names the receipt's hash), so the
    # receipt cannot list it: it must name this receipt instead (training/model_card.py).
    if CARD_NAME in found and CARD_NAME not in expected:
        if receipt_digest not in card:
            problems.append(f"{CARD_NAME}: the model card does not name this receipt's sha256")
        del found[CARD_NAME]
    problems += [f"{name}: not in the receipt" for name in sorted(set(found) - set(expected))]
    problems += [
        f"{name}: sha256 differs from the receipt"
        for name in sorted(set(found) & set(expected))
        if found[name]["sha256"] != expected[name]["sha256"]
    ]
    return problems


class Command(BaseCommand):
    help = "Verify a training receipt's Ed25519 signature (and, with --artifact, the model archive's files)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("path", type=Path, help="The receipt JSON file")
        parser.add_argument(
            "--public-key",
            type=Path,
            help="Trust only this PEM public key (default: the platform's signing keys)",
        )
        parser.add_argument("--artifact", type=Path, help="The downloaded model archive (tar.gz) to check")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            document = json.loads(Path(options["path"]).read_text())
        except (OSError, ValueError) as exc:
            raise CommandError(f"cannot read the receipt: {exc}") from None
        if options["public_key"]:
            # The one trusted key checks the signature, whatever key id the document names.
            pem = Path(options["public_key"]).read_text()
            keys = {str(document.get("key_id", "")) if isinstance(document, dict) else "": pem}
        else:
            keys = signing_key_provider().public_keys()
        problems = receipt_problems(document, public_keys=keys)
        if not problems and options["artifact"]:
            problems = archive_problems(document["receipt"], Path(options["artifact"]))
        if problems:
            raise CommandError("receipt NOT valid: " + "; ".join(problems))
        receipt = document["receipt"]
        self.stdout.write(
            f"receipt valid: job {receipt.get('job')}, dataset version {receipt.get('dataset_version')} "
            f"(merkle root {receipt.get('merkle_root')}), signed by key {document.get('key_id')}"
            + (", archive matches" if options["artifact"] else "")
        )
