"""Rights shares and preview picks take ASCII-digit ids only (issue 13, item 2)."""

from __future__ import annotations

import pytest

from marketplace.models import RightsAllocation
from tests.common.test_problems import assert_problem

ARABIC_INDIC = str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩")
FULL_WIDTH = str.maketrans("0123456789", "０１２３４５６７８９")


SPELLINGS = {
    "arabic-indic": lambda n: n.translate(ARABIC_INDIC),
    "full-width": lambda n: n.translate(FULL_WIDTH),
    "underscore": lambda n: f"0_{n}",  # int("0_7") == 7
}


@pytest.mark.parametrize("spell", SPELLINGS.values(), ids=SPELLINGS.keys())
def test_a_holder_id_in_other_digits_is_refused(alice, acme, token_for, listing, spell):
    client = token_for(alice, acme, ["read", "provide"])
    before = RightsAllocation.objects.count()
    holder = spell(str(acme.pk))
    response = client.post(
        f"/api/v1/catalog/listings/{listing.public_id}/rights", {"shares": {holder: 10_000}}, format="json"
    )
    body = assert_problem(response, 422, "marketplace.allocation_invalid")
    assert body["errors"][0]["pointer"] == f"/shares/{holder}"
    assert RightsAllocation.objects.count() == before
