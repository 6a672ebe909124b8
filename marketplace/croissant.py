"""Croissant 1.1 metadata (JSON-LD) for a listing, with the Responsible-AI (RAI 1.0) fields.

What Sealroom knows goes in: the sealed version's counts, the desensitization
policy and what it found (counts per entity type, never text), the screening
and drops, who contributed, and the custody terms. No record text is written,
not even the approved preview: the metadata travels further than the listing.
The records themselves are never downloadable, so the one distribution entry
describes the custody store and says how the data is reached (licensed
training jobs only).

What the FileObject names, and so what its ``sha256`` is of: the sealed
version's shard manifest, the JSON Lines that ``shard_manifest`` writes (one
line per encrypted shard, in index order: its index, record count and the
sha256 of its encrypted blob). Those shard hashes are the leaves of the
version's Merkle root, so the manifest, the checksum and the root agree; the
records the fields extract are inside those shards, readable only by a
licensed job in custody. A checksum of the plaintext records would commit to
custody text and could confirm guesses about it; the manifest reveals none.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from custody.models import Contribution, DatasetVersion, Shard
from marketplace.models import Listing, OfferState
from marketplace.terms import PURPOSE_WORDS

CROISSANT_1_1 = "http://mlcommons.org/croissant/1.1"
RAI_1_0 = "http://mlcommons.org/croissant/RAI/1.0"

CONTEXT: dict[str, Any] = {
    "@language": "en",
    "@vocab": "https://schema.org/",
    "citeAs": "cr:citeAs",
    "column": "cr:column",
    "conformsTo": "dct:conformsTo",
    "cr": "http://mlcommons.org/croissant/",
    "rai": "http://mlcommons.org/croissant/RAI/",
    "prov": "http://www.w3.org/ns/prov#",
    "data": {"@id": "cr:data", "@type": "@json"},
    "dataType": {"@id": "cr:dataType", "@type": "@vocab"},
    "dct": "http://purl.org/dc/terms/",
    "equivalentProperty": "cr:equivalentProperty",
    "examples": {"@id": "cr:examples", "@type": "@json"},
    "extract": "cr:extract",
    "field": "cr:field",
    "fileObject": "cr:fileObject",
    "fileProperty": "cr:fileProperty",
    "fileSet": "cr:fileSet",
    "format": "cr:format",
    "includes": "cr:includes",
    "isLiveDataset": "cr:isLiveDataset",
    "jsonPath": "cr:jsonPath",
    "key": "cr:key",
    "md5": "cr:md5",
    "parentField": "cr:parentField",
    "path": "cr:path",
    "recordSet": "cr:recordSet",
    "references": "cr:references",
    "regex": "cr:regex",
    "repeated": "cr:repeated",
    "replace": "cr:replace",
    "samplingRate": "cr:samplingRate",
    "sc": "https://schema.org/",
    "separator": "cr:separator",
    "source": "cr:source",
    "subField": "cr:subField",
    "transform": "cr:transform",
}

STORE_ID = "custody-records"


def shard_manifest(version: DatasetVersion) -> bytes:
    """The sealed version's shard manifest: JSON Lines of {index, records, sha256}, by index."""
    rows = Shard.objects.filter(version=version).order_by("index").values_list("index", "records", "sha256")
    return b"".join(
        json.dumps({"index": index, "records": records, "sha256": sha256}, separators=(",", ":")).encode()
        + b"\n"
        for index, records, sha256 in rows
    )


def _fields(contributions: list[Contribution]) -> list[dict[str, Any]]:
    text_fields = sorted({f for c in contributions for f in c.text_fields})
    meta_fields = sorted({f for c in contributions for f in c.metadata_fields})

    def field(name: str, path: str, data_type: str, description: str) -> dict[str, Any]:
        return {
            "@type": "cr:Field",
            "@id": f"records/{name}",
            "name": name,
            "description": description,
            "dataType": data_type,
            "source": {"fileObject": {"@id": STORE_ID}, "extract": {"jsonPath": path}},
        }

    fields = [field("id", "$.id", "sc:Integer", "The record's id within the sealed version.")]
    fields += [
        field(f"text/{name}", f"$.text.{name}", "sc:Text", f"Desensitized text field '{name}'.")
        for name in text_fields
    ]
    fields.append(field("lang", "$.lang", "sc:Text", "Detected language (ISO 639-1)."))
    fields += [
        field(f"meta/{name}", f"$.meta.{name}", "sc:Text", f"Metadata field '{name}' (desensitized).")
        for name in meta_fields
    ]
    return fields


def _personal_information(version: DatasetVersion, statistics: dict[str, Any]) -> str:
    policy = version.dataset.policy or {}
    entities = statistics.get("entities") or {}
    found = ", ".join(f"{kind} ({count:,})" for kind, count in entities.items()) or "none detected"
    operators = policy.get("operators") or {}
    default = (policy.get("default_operator") or {}).get("kind", "tag")
    handled = "; ".join(f"{kind}: {spec.get('kind')}" for kind, spec in operators.items())
    return (
        "Personal and sensitive information was detected and removed before storage, by Sealroom's "
        f"desensitizer (Presidio with Sealroom recognizers; policy '{policy.get('name', 'default')}', "
        f"score threshold {policy.get('threshold', 0.5)}, "
        f"languages {', '.join(policy.get('languages', []))}). "
        f"Entities found and replaced: {found}. Replacement: {handled + '; ' if handled else ''}"
        f"otherwise '{default}' (a typed placeholder). Records are stored encrypted; no one reads them "
        "outside licensed, sandboxed training jobs."
    )


def _use_cases(listing: Listing) -> str:
    purposes: list[str] = []
    for offer in listing.offers.filter(state=OfferState.ACTIVE).prefetch_related("terms_versions"):
        latest = max(offer.terms_versions.all(), key=lambda t: t.number, default=None)
        if latest is not None:
            purposes += [p for p in latest.terms["permission"]["purposes"] if p not in purposes]
    words = [PURPOSE_WORDS.get(p, p) for p in purposes]
    return (
        "Fine-tuning and evaluating models through Sealroom's vetted job templates, under a license for: "
        + (", ".join(words) if words else "no purpose offered yet")
        + ". Trainers receive trained weights or metrics, never the records."
    )


def croissant_document(listing: Listing, *, listing_url: str, terms_schema_url: str) -> dict[str, Any]:
    """The listing's Croissant 1.1 JSON-LD (a dict to serialise), RAI fields filled."""
    version = listing.version
    statistics = listing.statistics or {}
    contributions = list(version.contributions.select_related("contributor").order_by("pk"))
    contributors = sorted({c.contributor.name for c in contributions})
    findings = statistics.get("findings") or {}
    doc: dict[str, Any] = {
        "@context": CONTEXT,
        "@type": "sc:Dataset",
        "@id": listing_url,
        "conformsTo": [CROISSANT_1_1, RAI_1_0],
        "name": listing.title,
        "description": listing.description or f"{version.dataset.name}, version {version.number}.",
        "url": listing_url,
        "version": f"{version.number}.0.0",
        "dateCreated": version.created_at.date().isoformat(),
        "dateModified": (version.sealed_at or version.created_at).date().isoformat(),
        "creator": [{"@type": "sc:Organization", "name": name} for name in contributors],
        "publisher": {"@type": "sc:Organization", "name": listing.provider.name},
        "keywords": list(listing.domain_tags),
        "inLanguage": list(listing.languages),
        "isAccessibleForFree": False,
        "license": {
            "@type": "sc:CreativeWork",
            "name": "Sealroom license terms (per offer on the listing)",
            "url": terms_schema_url,
        },
        "citeAs": f"{listing.provider.name}. {listing.title} (version {version.number}). Sealroom. "
        f"Merkle root {version.merkle_root}.",
        "isLiveDataset": False,
        "distribution": [
            {
                "@type": "cr:FileObject",
                "@id": STORE_ID,
                "name": STORE_ID,
                "description": (
                    "Desensitized records in JSON Lines, held encrypted in Sealroom custody "
                    f"({statistics.get('records', version.records):,} records, "
                    f"{statistics.get('platform_tokens', version.tokens):,} platform tokens). "
                    "Not downloadable: licensed training jobs read them inside a sandbox. "
                    "The checksum is of the version's shard manifest (JSON Lines: index, records and "
                    "the sha256 of each encrypted shard, in index order), whose shard hashes are the "
                    f"leaves of the version's Merkle root, {version.merkle_root}."
                ),
                "contentUrl": listing_url,
                "encodingFormat": "application/jsonlines",
                "sha256": hashlib.sha256(shard_manifest(version)).hexdigest(),
            }
        ],
        "recordSet": [
            {
                "@type": "cr:RecordSet",
                "@id": "records",
                "name": "records",
                "description": "One desensitized record per row.",
                "key": {"@id": "records/id"},
                "field": _fields(contributions),
            }
        ],
        "rai:dataCollection": (
            f"Uploaded to Sealroom by {len(contributors)} contributing organisation(s) "
            f"({', '.join(contributors) or 'none'}) in {len(contributions)} file(s), "
            f"formats: {', '.join(sorted({c.format for c in contributions})) or 'none'}."
        ),
        "rai:dataCollectionType": ["Contributed by data providers (file upload)"],
        "rai:personalSensitiveInformation": _personal_information(version, statistics),
        "rai:dataPreprocessingProtocol": [
            "Parsed and validated (size, format and per-record limits).",
            "Language detected per record.",
            "Desensitized: personal and sensitive identifiers replaced (see personalSensitiveInformation).",
            "Screened for exact and near duplicates, garbage and poisoning signals; findings: "
            + (", ".join(f"{k} {v:,}" for k, v in findings.items()) or "none")
            + ". The provider chose which flagged records to drop before sealing.",
            "Encrypted in shards (AES-256-GCM) under a per-version key; sealed with a Merkle root.",
        ],
        "rai:dataManipulationProtocol": (
            "Only the desensitization replacements and the provider's drops at sealing; "
            "a sealed version is immutable."
        ),
        "rai:dataUseCases": _use_cases(listing),
        "rai:dataLimitations": (
            "Identifiers are replaced by placeholders, so tasks that need them cannot be learned. "
            "Detection is automatic and may miss or over-match entities. Length distribution "
            f"(characters): {statistics.get('length_distribution') or {}}."
        ),
        "rai:dataReleaseMaintenancePlan": (
            "Each version is sealed and never changes; new data comes as a new version. A takedown "
            "withdraws the version and its listings, revokes its licenses (open jobs stop at their "
            "next batch, queued ones are cancelled), refunds unreleased escrow, destroys trained "
            "models still held in custody and shreds the upload's quarantine copy. It does not "
            "touch the version's key: destroying it (the crypto-shred of the records) is a separate "
            "operator step, after the key has been disabled for a waiting period. Models already "
            "downloaded cannot be recalled; their receipts name the version."
        ),
        "prov:wasDerivedFrom": [
            {
                "@id": f"urn:sealroom:contribution:{c.pk}",
                "name": f"Contribution {c.pk} by {c.contributor.name}",
            }
            for c in contributions
        ],
        "prov:wasGeneratedBy": [
            {
                "@type": "prov:Activity",
                "name": "Sealroom ingest: parse, desensitize, screen, encrypt",
                "prov:endedAtTime": version.processed_at.isoformat() if version.processed_at else None,
            },
            {
                "@type": "prov:Activity",
                "name": "Sealed by the provider after review",
                "prov:endedAtTime": version.sealed_at.isoformat() if version.sealed_at else None,
            },
        ],
    }
    if listing.published_at is not None:
        doc["datePublished"] = listing.published_at.date().isoformat()
    _generated(doc, version)
    return doc


def _generated(doc: dict[str, Any], version: DatasetVersion) -> None:
    """A model-generated version (issue 17; custody/services/synthetic.py): the generation job as the
    activity that made it, the model's artifact hash, the source version's Merkle root, epsilon."""
    provenance = version.provenance or {}
    if not provenance.get("model_generated"):
        return
    leakage = provenance.get("leakage") or {}
    epsilon = provenance.get("epsilon_spent")
    doc["rai:dataCollectionType"] = ["Model-generated (synthetic) by a model held in Sealroom custody"]
    doc["rai:dataCollection"] = (
        f"Generated inside Sealroom custody by job {provenance.get('job')} with model "
        f"{(provenance.get('generated_by') or {}).get('custody_model')} (artifact sha256 "
        f"{provenance.get('model_artifact_sha256')}), trained on dataset version "
        f"{provenance.get('source_version')} (Merkle root {provenance.get('source_merkle_root')}). "
        f"Leakage screen against that version: {leakage.get('generated', 0)} generated, "
        f"{leakage.get('dropped', 0)} dropped ({leakage.get('dropped_exact', 0)} exact, "
        f"{leakage.get('dropped_near', 0)} near duplicates, {leakage.get('dropped_canary', 0)} canary "
        f"exposures), {leakage.get('kept', 0)} kept. Privacy budget spent by the generator's training: "
        + (
            f"epsilon {epsilon} (differential privacy carries over to its output)."
            if epsilon is not None
            else "none (trained without DP)."
        )
    )
    doc["prov:wasDerivedFrom"] = [
        *doc["prov:wasDerivedFrom"],
        {
            "@id": f"urn:sealroom:dataset-version:{provenance.get('source_version')}",
            "name": f"Source dataset version, Merkle root {provenance.get('source_merkle_root')}",
        },
    ]
    doc["prov:wasGeneratedBy"] = [
        {
            "@type": "prov:Activity",
            "@id": f"urn:sealroom:job:{provenance.get('job')}",
            "name": f"Generation job {provenance.get('job')}: model artifact sha256 "
            f"{provenance.get('model_artifact_sha256')}, source Merkle root "
            f"{provenance.get('source_merkle_root')}, privacy budget spent epsilon "
            f"{epsilon if epsilon is not None else 'none'}",
        },
        *doc["prov:wasGeneratedBy"],
    ]
