"""Console overview, the latest signed checkpoint with its public key, and the ledger check."""

from __future__ import annotations

from django.db import transaction
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from common.audit import audit_pending, audit_record
from common.audit_checkpoints import CHECKPOINT_PURPOSE, ExportedCheckpoint, checkpoint_latest
from common.models import AuditChainHead
from common.signing import PublicKeyRing, signing_key_provider
from marketplace.ledger import ledger_check, trial_balance
from portal.console.access import console_page, staff_user


@console_page
@require_GET
def console_home(request: HttpRequest) -> HttpResponse:
    """Where things stand: the chain head, the sequencer's lag, the latest checkpoint, links to each tool."""
    user = staff_user(request)
    head = AuditChainHead.objects.filter(pk=1).first()
    latest = checkpoint_latest()
    pending = audit_pending()
    context = {
        "head": head,
        "latest": latest,
        "behind": (head.seq - latest.seq) if head is not None and latest is not None else None,
        "pending": pending,
        "pending_age": pending.oldest_age_seconds(),
        "is_operator": user.is_operator,
    }
    return render(request, "portal/console/home.html", context)


@console_page
@require_GET
def checkpoint_page(request: HttpRequest) -> HttpResponse:
    """The latest signed checkpoint, the exact signed bytes and the public key to check them independently."""
    latest = checkpoint_latest()
    public_keys = signing_key_provider().public_keys()
    exported = ExportedCheckpoint.from_model(latest) if latest is not None else None
    context = {
        "checkpoint": exported,
        "message": exported.message().decode() if exported else "",
        "verifies": PublicKeyRing(public_keys).verifies(
            exported.key_id, exported.message(), exported.signature
        )
        if exported
        else None,
        "public_key": public_keys.get(exported.key_id, "") if exported else "",
        "public_keys": sorted(public_keys.items()),
        "purpose": CHECKPOINT_PURPOSE,
    }
    return render(request, "portal/console/checkpoint.html", context)


@console_page
@require_GET
def ledger_page(request: HttpRequest) -> HttpResponse:
    """Trial balance per currency and every broken ledger invariant (run now, audited)."""
    user = staff_user(request)
    balances = sorted(trial_balance().items())
    problems = ledger_check()
    with transaction.atomic():
        audit_record(
            action="console.ledger_check",
            actor=user,
            object_type="ledger",
            details={"ok": not problems, "problems": len(problems), "currencies": [c for c, _ in balances]},
        )
    return render(request, "portal/console/ledger.html", {"balances": balances, "problems": problems})
