"""Croissant 1.1 metadata: the required structure, the RAI fields, and no record text."""

from __future__ import annotations

import json

import pytest
from django.test import Client

from marketplace.croissant import CROISSANT_1_1, RAI_1_0, croissant_document
from marketplace.services import catalog

REQUIRED_RAI = (
    "rai:dataCollection",
    "rai:personalSensitiveInformation",
    "rai:dataPreprocessingProtocol",
    "rai:dataUseCases",
    "rai:dataLimitations",
)


@pytest.fixture
def document(published):
    return croissant_document(
        published, listing_url="https://sealroom.test/market/catalog/1/", terms_schema_url="https://x/schema"
    )


class TestCroissantDocument:
    def test_has_the_required_croissant_structure(self, document):
        context = document["@context"]
        assert context["@vocab"] == "https://schema.org/"
        assert context["cr"] == "http://mlcommons.org/croissant/"
        assert context["rai"] == "http://mlcommons.org/croissant/RAI/"
        assert document["@type"] == "sc:Dataset"
        assert CROISSANT_1_1 in document["conformsTo"] and RAI_1_0 in document["conformsTo"]
        assert document["name"] == "Support tickets"
        for key in ("description", "url", "license", "creator", "datePublished", "version"):
            assert document[key], key
        [store] = document["distribution"]
        assert store["@type"] == "cr:FileObject" and store["encodingFormat"] == "application/jsonlines"
        [records] = document["recordSet"]
        assert records["@type"] == "cr:RecordSet"
        for field in records["field"]:
            assert field["@type"] == "cr:Field"
            assert field["source"]["fileObject"] == {"@id": store["@id"]}
            assert field["source"]["extract"]["jsonPath"].startswith("$.")
            assert field["dataType"] in ("sc:Text", "sc:Integer")
        assert {f["name"] for f in records["field"]} >= {"id", "lang"}

    def test_fills_the_responsible_ai_fields_from_what_sealroom_knows(self, document):
        for key in REQUIRED_RAI:
            assert document[key], key
        pii = document["rai:personalSensitiveInformation"]
        assert "PERSON (40)" in pii and "EMAIL_ADDRESS (12)" in pii
        assert "exact_duplicate 2" in " ".join(document["rai:dataPreprocessingProtocol"])
        assert "non-commercial research" in document["rai:dataUseCases"]
        assert document["prov:wasDerivedFrom"][0]["@id"].startswith("urn:sealroom:contribution:")
        assert json.loads(json.dumps(document)) == document  # plain JSON

    def test_holds_no_record_text_even_with_an_approved_preview(self, alice, published):
        published.preview = [{"record_id": 1, "text": {"text": "SECRET-PREVIEW-TEXT"}, "lang": "en"}]
        published.save(update_fields=["preview"])
        catalog.preview_approve(actor=alice, listing=published)
        doc = croissant_document(published, listing_url="https://x/", terms_schema_url="https://y/")
        assert "SECRET-PREVIEW-TEXT" not in json.dumps(doc)


class TestCroissantDownload:
    def test_downloads_from_the_listing_page_and_the_api(self, bob, published):
        client = Client()
        client.force_login(bob)
        page = client.get(f"/market/catalog/{published.public_id}/croissant.json")
        assert page.status_code == 200
        assert page["Content-Type"] == "application/ld+json"
        assert "attachment" in page["Content-Disposition"]
        assert json.loads(page.content)["@type"] == "sc:Dataset"
        api = client.get(f"/api/v1/catalog/listings/{published.public_id}/croissant")
        assert api.status_code == 200 and json.loads(api.content)["name"] == published.title
