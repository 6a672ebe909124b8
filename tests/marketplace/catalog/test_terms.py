"""License terms: the JSON Schema rejects bad documents with pointers; snapshots fit custody's grants."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from django.conf import settings

from custody.models import Grant
from marketplace.exceptions import TermsInvalid
from marketplace.services import catalog
from marketplace.terms import (
    DEFAULT_GATE_MAX_EXPOSURE,
    TERMS_SCHEMA,
    grant_snapshot,
    terms_plain,
    terms_validate,
)
from tests.grants import grant_for_test
from tests.marketplace.catalog.conftest import terms_doc


def pointers(excinfo: pytest.ExceptionInfo[TermsInvalid]) -> list[str]:
    return [e["pointer"] for e in excinfo.value.errors]


class TestTermsValidate:
    def test_accepts_a_minimal_document_and_fills_the_defaults(self):
        doc = terms_doc()
        del doc["duty"]
        clean = terms_validate(doc)
        assert clean["duty"] == {
            "attribution": "",
            "differential_privacy": {"required": False},
            "release_gate": {"max_exposure": DEFAULT_GATE_MAX_EXPOSURE},
        }
        assert clean["constraint"]["max_licenses"] is None

    def test_rejects_an_unknown_field_with_its_pointer(self):
        doc = terms_doc()
        doc["permission"]["resell"] = True
        with pytest.raises(TermsInvalid) as excinfo:
            terms_validate(doc)
        assert excinfo.value.code == "marketplace.terms_unknown_field"
        assert pointers(excinfo) == ["/terms/permission/resell"]

    def test_rejects_an_unknown_top_level_field(self):
        with pytest.raises(TermsInvalid) as excinfo:
            terms_validate({**terms_doc(), "sublicense": "yes"})
        assert pointers(excinfo) == ["/terms/sublicense"]

    @pytest.mark.parametrize(
        ("section", "change", "pointer"),
        [
            ("permission", {"purposes": ["world_domination"]}, "/terms/permission/purposes/0"),
            ("permission", {"purposes": []}, "/terms/permission/purposes"),
            ("permission", {"job_templates": ["shell_script"]}, "/terms/permission/job_templates/0"),
            ("permission", {"weights_may_leave": "yes"}, "/terms/permission/weights_may_leave"),
            ("constraint", {"max_jobs": 0}, "/terms/constraint/max_jobs"),
            ("constraint", {"max_tokens": -5}, "/terms/constraint/max_tokens"),
            ("constraint", {"term_days": 1.5}, "/terms/constraint/term_days"),
            ("constraint", {"max_licenses": 0}, "/terms/constraint/max_licenses"),
        ],
    )
    def test_rejects_bad_values_with_pointers(self, section, change, pointer):
        doc = terms_doc()
        doc[section] = {**doc[section], **change}
        with pytest.raises(TermsInvalid) as excinfo:
            terms_validate(doc)
        assert excinfo.value.code == "marketplace.terms_invalid"
        assert pointer in pointers(excinfo)

    def test_rejects_a_missing_required_field(self):
        doc = terms_doc()
        del doc["constraint"]["term_days"]
        with pytest.raises(TermsInvalid) as excinfo:
            terms_validate(doc)
        assert pointers(excinfo) == ["/terms/constraint/term_days"]

    def test_differential_privacy_needs_an_epsilon_cap(self):
        doc = terms_doc(duty={"differential_privacy": {"required": True}})
        with pytest.raises(TermsInvalid) as excinfo:
            terms_validate(doc)
        assert pointers(excinfo) == ["/terms/duty/differential_privacy/epsilon_cap"]

    @pytest.mark.parametrize("document", [None, [], "terms", 3, True])
    def test_rejects_a_document_that_is_not_an_object(self, document):
        with pytest.raises(TermsInvalid) as excinfo:
            terms_validate(document)
        assert pointers(excinfo) == ["/terms"]

    def test_epsilon_above_the_versions_cap_is_rejected(self, sealed_rows):
        version = sealed_rows(epsilon_cap="4")
        doc = terms_doc(duty={"differential_privacy": {"required": True, "epsilon_cap": 4.5}})
        with pytest.raises(TermsInvalid) as excinfo:
            terms_validate(doc, version=version)
        assert excinfo.value.code == "marketplace.epsilon_above_cap"
        assert pointers(excinfo) == ["/terms/duty/differential_privacy/epsilon_cap"]
        doc["duty"]["differential_privacy"]["epsilon_cap"] = 4
        assert terms_validate(doc, version=version)["duty"]["differential_privacy"]["epsilon_cap"] == 4

    def test_a_capped_version_needs_dp_terms(self, sealed_rows):
        version = sealed_rows(epsilon_cap="2")
        with pytest.raises(TermsInvalid) as excinfo:
            terms_validate(terms_doc(), version=version)
        assert excinfo.value.code == "marketplace.dp_required"


class TestPublishedSchema:
    def test_docs_hold_the_schema_the_code_enforces(self):
        published = json.loads((Path(settings.BASE_DIR) / "docs" / "terms.schema.json").read_text())
        assert published == TERMS_SCHEMA

    def test_the_schema_forbids_unknown_fields_everywhere(self):
        def objects(node):
            if isinstance(node, dict):
                if node.get("type") == "object":
                    yield node
                for value in node.values():
                    yield from objects(value)

        found = list(objects(TERMS_SCHEMA))
        assert len(found) >= 5
        assert all(o.get("additionalProperties") is False for o in found)


class TestGrantSnapshot:
    def test_custody_issues_a_grant_from_the_snapshot(self, alice, bolt, sealed_rows):
        version = sealed_rows(epsilon_cap="8")
        listing = catalog.listing_create(actor=alice, version=version, title="Capped")
        doc = terms_doc(duty={"differential_privacy": {"required": True, "epsilon_cap": 3}})
        offer = catalog.offer_create(
            actor=alice, listing=listing, name="DP", terms=doc, price={"model": "fixed", "unit_price": "0.01"}
        )
        row = catalog.offer_terms_current(offer)
        starts = datetime(2026, 1, 1, tzinfo=UTC)
        snapshot = grant_snapshot(row, starts_at=starts)
        assert snapshot["expires_at"] == "2026-04-01T00:00:00+00:00"
        assert snapshot["epsilon_cap"] == "3"
        assert snapshot["dp_required"] is True
        assert snapshot["gate_max_exposure"] == DEFAULT_GATE_MAX_EXPOSURE == 7.0
        assert snapshot["max_tokens"] == 5_000_000
        grant = grant_for_test(version, bolt, **snapshot)
        assert Grant.objects.get(pk=grant.pk).terms["job_templates"] == [
            "causal_lm_lora",
            "seq_classification",
        ]

    def test_no_cap_means_no_epsilon_key(self, offer):
        snapshot = grant_snapshot(catalog.offer_terms_current(offer), starts_at=datetime.now(UTC))
        assert "epsilon_cap" not in snapshot
        assert snapshot["dp_required"] is False
        assert snapshot["attribution"] == "Acme support tickets"
        assert snapshot["gate_max_exposure"] == 3.5

    def test_the_version_cap_applies_when_the_license_names_none(self, sealed_rows):
        version = sealed_rows(epsilon_cap="5")
        doc = terms_validate(terms_doc(duty={"differential_privacy": {"required": True, "epsilon_cap": 5}}))
        assert doc["duty"]["differential_privacy"]["epsilon_cap"] == 5
        del doc["duty"]["differential_privacy"]["epsilon_cap"]
        from marketplace.terms import terms_epsilon_cap

        assert terms_epsilon_cap(doc, version) == Decimal(5)


class TestPlainLanguage:
    def test_renders_every_term(self):
        doc = terms_validate(
            terms_doc(
                constraint={
                    "max_jobs": 1,
                    "max_epochs": 1,
                    "max_tokens": 1000,
                    "term_days": 30,
                    "max_licenses": 1,
                },
                duty={"differential_privacy": {"required": True, "epsilon_cap": 2}},
            )
        )
        text = " ".join(terms_plain(doc))
        assert "non-commercial research" in text
        assert "LoRA fine-tuning" in text
        assert "Up to 1 training job, each at most 1 epoch, and 1,000 platform tokens" in text
        assert "30 days" in text
        assert "download the trained weights" in text
        assert "epsilon at most 2" in text
        assert "Exclusive: at most 1 license" in text

    def test_weights_that_stay_are_said_so(self):
        doc = terms_doc()
        doc["permission"]["weights_may_leave"] = False
        assert any("stay in custody" in line for line in terms_plain(terms_validate(doc)))
