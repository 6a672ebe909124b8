"""The ``sealroom`` command, run as a subprocess against the live server."""

from __future__ import annotations

import re

from marketplace.models import Order as OrderRow
from tests.conftest import make_token
from tests.sdk.conftest import TRAINER_SCOPES, run_cli


def test_login_saves_the_token_for_whoami(live_server, bob, bolt):
    token = make_token(bob, bolt, TRAINER_SCOPES)
    signed_in = run_cli("login", "--token", token, url=live_server.url)
    assert signed_in.returncode == 0, signed_in.stderr
    assert "as bob for Bolt Models" in signed_in.stdout
    me = run_cli("whoami", url=live_server.url)  # no SEALROOM_TOKEN: the saved one
    assert me.returncode == 0, me.stderr
    assert "bob" in me.stdout
    assert "Bolt Models" in me.stdout
    assert run_cli("logout", url=live_server.url).returncode == 0
    gone = run_cli("whoami", url=live_server.url)
    assert gone.returncode == 1
    assert "No API token" in gone.stderr


def test_search_show_quote_and_order(live_server, bob, bolt, market, fund):
    offer = market(price="fixed")
    fund(bolt, 100_000)
    token = make_token(bob, bolt, TRAINER_SCOPES)
    found = run_cli("catalog", "search", url=live_server.url, token=token)
    assert found.returncode == 0, found.stderr
    assert f"Tickets {offer.listing.version_id}" in found.stdout
    shown = run_cli("catalog", "show", offer.listing.public_id, url=live_server.url, token=token)
    assert "500.00 EUR" in shown.stdout
    quoted = run_cli("quote", offer.public_id, url=live_server.url, token=token)
    assert quoted.stdout.startswith("500.00 EUR")
    ordered = run_cli("order", offer.public_id, url=live_server.url, token=token)
    assert ordered.returncode == 0, ordered.stderr
    license_ref = re.search(r"license: (lic_\w+)", ordered.stdout)
    assert license_ref is not None, ordered.stdout
    assert OrderRow.objects.get(buyer=bolt).license.ref == license_ref.group(1)


def test_errors_print_the_servers_code_detail_and_pointers(live_server, bob, bolt, market):
    offer = market(price="fixed")
    reader = make_token(bob, bolt, ["read"])
    denied = run_cli("order", offer.public_id, url=live_server.url, token=reader)
    assert denied.returncode == 1
    assert "Error 403 common.token_scope_missing" in denied.stderr
    invalid = run_cli("order", "0", url=live_server.url, token=make_token(bob, bolt, TRAINER_SCOPES))
    assert invalid.returncode == 1
    assert "Error 422 validation_error" in invalid.stderr
    assert "/offer_id:" in invalid.stderr
