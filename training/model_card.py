"""The model card (``README.md``) in a released artifact, in the Hugging Face format.

YAML front matter (license, tags, datasets, pipeline, and a ``sealroom`` block with the lineage)
and a Markdown body: where the data came from (the dataset version's Merkle root, the license
reference, the hash of its terms), ε when the job was differentially private, the signed
receipt's hash and how to verify it, and the use the license permits.

The card is written after the receipt is signed, because it names the receipt's hash; so the
receipt's ``artifact_files`` cover every file of the archive but this one, and the verifiers
(``manage.py verify_receipt --artifact``, the SDK) accept ``README.md`` outside the receipt only
when it names the receipt's hash. Nothing here comes from a custody record: names, ids, hashes
and the license's own terms.
"""

from __future__ import annotations

from typing import Any

import yaml

from training.models import JobTemplate, TrainingJob

CARD_NAME = "README.md"

PURPOSE_WORDS = {
    "research": "non-commercial research",
    "commercial": "commercial products and services",
    "internal_evaluation": "internal evaluation only",
}
_PIPELINE = {
    JobTemplate.CAUSAL_LM: "text-generation",
    JobTemplate.CAUSAL_LM_LORA: "text-generation",
    JobTemplate.SEQ_CLASSIFICATION: "text-classification",
}


def card_metadata(job: TrainingJob, document: dict[str, Any], receipt_hash: str) -> dict[str, Any]:
    """The front matter: Hugging Face's fields, and the lineage under ``sealroom``."""
    receipt = document["receipt"]
    license_ = receipt.get("license") or {}
    version = job.grant.version
    pipeline = _PIPELINE.get(JobTemplate(job.template), "")
    tags = ["sealroom", job.template]
    if pipeline:
        tags.append(pipeline)
    if receipt.get("epsilon_spent") is not None:
        tags.append("differential-privacy")
    metadata: dict[str, Any] = {
        "license": "other",
        "license_name": f"sealroom-{license_.get('ref') or f'grant-{job.grant.public_id}'}",
        "library_name": "transformers",
        "pipeline_tag": pipeline or None,
        "tags": tags,
        "datasets": [f"sealroom/{version.dataset.name} v{version.number}"],
        "sealroom": {
            "job": receipt.get("job"),
            "receipt_sha256": receipt_hash,
            "receipt_key_id": document.get("key_id"),
            "dataset_version": receipt.get("dataset_version"),
            "merkle_root": receipt.get("merkle_root"),
            "license_ref": license_.get("ref"),
            "terms_sha256": license_.get("terms_sha256"),
            "allocation_sha256": license_.get("allocation_sha256"),
            "base_model": (receipt.get("base_model") or {}).get("name"),
            "epsilon": receipt.get("epsilon_spent"),
            "delta": receipt.get("dp_delta"),
            "platform_tokens_trained": receipt.get("platform_tokens_trained"),
        },
    }
    return {k: v for k, v in metadata.items() if v is not None}


def model_card(job: TrainingJob, document: dict[str, Any], receipt_hash: str) -> str:
    """The card's text: front matter, then the body."""
    metadata = card_metadata(job, document, receipt_hash)
    front = yaml.safe_dump(metadata, sort_keys=False, allow_unicode=True)
    return f"---\n{front}---\n\n{_body(job, metadata)}"


def _body(job: TrainingJob, metadata: dict[str, Any]) -> str:
    lineage = metadata["sealroom"]
    terms = job.grant.terms or {}
    purposes = [PURPOSE_WORDS.get(str(p), str(p)) for p in terms.get("purposes") or []]
    epsilon = lineage.get("epsilon")
    privacy = (
        f"Trained with differential privacy (DP-SGD): ε = {epsilon} at δ = {lineage.get('delta')}, "
        "with respect to adding or removing one training record."
        if epsilon is not None
        else "Trained without differential privacy (no ε guarantee); the release gate checked it for "
        "memorised canaries and verbatim continuations before release."
    )
    attribution = str(terms.get("attribution") or "").strip()
    lines = [
        f"# Job {lineage['job']}: {job.get_template_display()} on {metadata['datasets'][0].split('/', 1)[1]}",
        "",
        f"Fine-tuned from `{lineage.get('base_model')}` by Sealroom's training runner, inside custody: "
        "the trainer never saw the records.",
        "",
        "## Data lineage",
        "",
        f"- Dataset version: {lineage['dataset_version']}, Merkle root `{lineage['merkle_root']}`",
        f"- License: `{lineage.get('license_ref')}`, terms sha256 `{lineage.get('terms_sha256')}`",
        f"- Rights allocation sha256: `{lineage.get('allocation_sha256')}`",
        f"- Platform tokens trained: {lineage.get('platform_tokens_trained')}",
        f"- Privacy: {privacy}",
        "",
        "## Intended use",
        "",
        "The license permits use for: " + (", ".join(purposes) or "the purposes its terms name") + ".",
    ]
    if attribution:
        lines += ["", f"Credit the data as: {attribution}"]
    lines += [
        "",
        "## Receipt",
        "",
        f"Signed receipt sha256: `{lineage['receipt_sha256']}` (key `{lineage.get('receipt_key_id')}`).",
        "The hash is sha256 of the receipt's canonical JSON (`receipt` with sorted keys, no spaces,",
        "UTF-8), the bytes its Ed25519 signature covers. To verify: download the receipt",
        f"(`GET /api/v1/training/jobs/{lineage['job']}/receipt`), check that its hash is the one above, then",
        "check its signature against the platform's published keys (`GET /api/v1/audit/keys`) with",
        "`sealroom receipts verify receipt.json --artifact model.tar.gz` or",
        "`python manage.py verify_receipt receipt.json --artifact model.tar.gz`. The receipt lists the",
        "sha256 of every other file here.",
        "",
        "## Use",
        "",
        "```python",
        "from transformers import AutoModelForCausalLM, AutoTokenizer"
        if _PIPELINE.get(JobTemplate(job.template)) == "text-generation"
        else "from transformers import AutoModelForSequenceClassification, AutoTokenizer",
        "",
        "tokenizer = AutoTokenizer.from_pretrained('model')",
    ]
    if _PIPELINE.get(JobTemplate(job.template)) == "text-generation":
        lines += [
            "model = AutoModelForCausalLM.from_pretrained('model')",
            "ids = model.generate(**tokenizer('hello', return_tensors='pt'), max_new_tokens=20)",
            "print(tokenizer.decode(ids[0], skip_special_tokens=True))",
        ]
    else:
        lines += ["model = AutoModelForSequenceClassification.from_pretrained('model')"]
    lines += ["```", ""]
    return "\n".join(lines)


def card_front_matter(text: str) -> dict[str, Any]:
    """The front matter of a card's text. :raises ValueError: no front matter, or not a mapping."""
    if not text.startswith("---\n"):
        raise ValueError("the model card has no front matter")
    end = text.find("\n---\n", 4)
    if end < 0:
        raise ValueError("the model card's front matter is not closed")
    loaded = yaml.safe_load(text[4 : end + 1])
    if not isinstance(loaded, dict):
        raise ValueError("the model card's front matter is not a mapping")
    return loaded
