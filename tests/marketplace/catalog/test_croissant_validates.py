"""Every listing's Croissant passes the official validator, offline (issue 17, item 4).

``mlcroissant`` (MLCommons' reference implementation, pinned in the lock) loads the JSON-LD and
raises on any error; its issue list also holds the warnings, which must be empty too. The socket
layer is closed for the test, so the validator cannot reach the network (no context download).
"""

from __future__ import annotations

import hashlib
import json
import socket

import mlcroissant  # type: ignore[import-untyped]
import pytest

from custody.models import Shard
from marketplace.croissant import croissant_document, shard_manifest
from marketplace.services import catalog
from tests.marketplace.catalog.conftest import terms_doc

URL = "https://sealroom.test/market/catalog/1/"


@pytest.fixture
def offline(monkeypatch):
    """No network for the validator: a connection attempt fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"the validator tried to reach the network: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def validated(document: dict) -> mlcroissant.Dataset:
    """The validator's dataset; raises ``mlcroissant.ValidationError`` on any error, fails on warnings."""
    dataset = mlcroissant.Dataset(jsonld=json.loads(json.dumps(document)))
    issues = dataset.metadata.issues
    assert not issues.errors and not issues.warnings, issues.report()
    return dataset


class TestCroissantValidates:
    def test_a_listings_croissant_passes_the_official_validator(self, published, offline):
        dataset = validated(
            croissant_document(published, listing_url=URL, terms_schema_url="https://x/schema")
        )
        [store] = dataset.metadata.distribution
        assert store.sha256 == hashlib.sha256(shard_manifest(published.version)).hexdigest()
        assert {field.name for record_set in dataset.metadata.record_sets for field in record_set.fields} >= {
            "id",
            "lang",
        }

    def test_a_pooled_version_with_metadata_fields_passes_too(self, alice, acme, sealed_rows, offline):
        from tests.factories import OrganisationFactory

        cora = OrganisationFactory(name="Cora Texts", is_provider=True)
        version = sealed_rows(tokens={acme: 3000, cora: 1000})
        version.contributions.update(text_fields=["body"], metadata_fields=["kind", "region"])
        listing = catalog.listing_create(
            actor=alice, version=version, title="Pooled", domain_tags=["support"]
        )
        price = {"model": "fixed", "unit_price": "500.00"}
        catalog.offer_create(actor=alice, listing=listing, name="Research", terms=terms_doc(), price=price)
        listing = catalog.listing_publish(actor=alice, listing=listing)
        document = croissant_document(listing, listing_url=URL, terms_schema_url="https://x/schema")
        validated(document)
        assert [c["name"] for c in document["creator"]] == ["Acme Corpora", "Cora Texts"]

    def test_a_model_generated_version_passes_with_its_provenance(self, published, offline):
        # Issue 17: a synthetic version's Croissant names the generation job, the model's artifact
        # hash, the source's Merkle root and the epsilon spent, and still validates.
        version = published.version
        version.provenance = {
            "job": "job_00000000000000aa",
            "model_generated": True,
            "generated_by": {"template": "generate", "custody_model": "job_00000000000000bb"},
            "model_artifact_sha256": "a" * 64,
            "source_version": "dsv_00000000000000cc",
            "source_merkle_root": "b" * 64,
            "epsilon_spent": 2.5,
            "leakage": {"generated": 40, "kept": 38, "dropped": 2, "dropped_exact": 1, "dropped_near": 1},
        }
        version.save(update_fields=["provenance"])
        published.refresh_from_db()
        document = croissant_document(published, listing_url=URL, terms_schema_url="https://x/schema")
        validated(document)
        generation = document["prov:wasGeneratedBy"][0]
        assert generation["@id"] == "urn:sealroom:job:job_00000000000000aa"
        assert "a" * 64 in generation["name"] and "b" * 64 in generation["name"]
        assert "epsilon 2.5" in generation["name"]
        source = document["prov:wasDerivedFrom"][-1]
        assert source["@id"] == "urn:sealroom:dataset-version:dsv_00000000000000cc"
        assert "Model-generated" in document["rai:dataCollectionType"][0]

    def test_without_a_checksum_the_validator_refuses_it(self, published, offline):
        # Positive control: the validator is strict about the one thing this issue fixed.
        document = croissant_document(published, listing_url=URL, terms_schema_url="https://x/schema")
        del document["distribution"][0]["sha256"]
        with pytest.raises(mlcroissant.ValidationError, match="sha256"):
            mlcroissant.Dataset(jsonld=document)


class TestShardManifest:
    def test_the_checksum_is_of_the_shard_manifest_in_index_order(self, published):
        shards = Shard.objects.filter(version=published.version).order_by("index")
        expected = "".join(
            json.dumps({"index": s.index, "records": s.records, "sha256": s.sha256}, separators=(",", ":"))
            + "\n"
            for s in shards
        ).encode()
        assert shard_manifest(published.version) == expected
        document = croissant_document(published, listing_url=URL, terms_schema_url="https://x/schema")
        assert document["distribution"][0]["sha256"] == hashlib.sha256(expected).hexdigest()

    def test_the_takedown_text_says_the_key_is_not_destroyed_by_it(self, published):
        plan = croissant_document(published, listing_url=URL, terms_schema_url="https://x/schema")[
            "rai:dataReleaseMaintenancePlan"
        ]
        assert "does not touch the version's key" in plan
        assert "destroys the version's key" not in plan
