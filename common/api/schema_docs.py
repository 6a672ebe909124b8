"""What ``/api/v1/docs/`` tells a trainer or a provider: tags in journey order, a getting-started
guide, and per operation its tag, description and request-body example.

Operations are keyed ``"<view module>.<view class>.<METHOD>"`` (a string, so common imports no
upper app). ``ProblemAutoSchema`` reads this catalogue; a view's own ``extend_schema`` still wins.
It never falls back to a docstring inherited from a base view: ``tests/common/test_api_docs.py``
fails when an operation has no entry here (or no own docstring), no summary, or a tag not in
``TAGS``.

Amounts are decimal strings in major units (``"150.00"``), ids are public ids (``ofr_...``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# --- tags, in the order of the journeys ----------------------------------------------------------

TAGS: list[dict[str, str]] = [
    {
        "name": "Getting started",
        "description": "Who you are and your API tokens. Start here: `GET /me` with your token.",
    },
    {
        "name": "Catalog",
        "description": "Find data to train on: published listings, their statistics, offers, prices and "
        "license terms (trainers; any organisation may read).",
    },
    {
        "name": "Quotes & orders",
        "description": "Price a usage, place an order (escrowed from your balance; send an "
        "`Idempotency-Key`), and, as a provider, approve or reject orders that need approval.",
    },
    {
        "name": "Licenses",
        "description": "What a paid order gives you: a license (`lic_...`) with jobs, tokens, epsilon and "
        "time left. Submit training jobs under it.",
    },
    {
        "name": "Training jobs",
        "description": 'Templates, base models, and jobs: submit under a license (`license: "lic_..."`), '
        "follow progress, metrics and the release gate, cancel.",
    },
    {
        "name": "Artifacts & receipts",
        "description": "Download the trained model (where the license lets weights leave custody) and its "
        "signed receipt; verify the receipt offline against the published keys.",
    },
    {
        "name": "Models in custody",
        "description": "Models whose weights stay in custody (issue 16): their trainers list them, "
        "licensees buy inference tokens and call them (`generate`, `classify`); answers pass an "
        "extraction guard, every call is metered and settled to the data's holders and the trainer.",
    },
    {
        "name": "Custody (providers)",
        "description": "Providers: create datasets and versions, upload corpora in resumable parts, review "
        "desensitization reports and findings, seal, take down.",
    },
    {
        "name": "Listings (providers)",
        "description": "Providers: list a sealed version, add offers with terms and prices, pick a preview, "
        "set rights holders' shares, publish or withdraw.",
    },
    {
        "name": "Money",
        "description": "Balances, payouts, earnings and spend statements; operators record top-ups and "
        "refunds. Amounts are decimal strings in major units with `amount_minor` beside them.",
    },
    {
        "name": "Organisation",
        "description": "Members, roles, invitations and notifications.",
    },
    {
        "name": "Webhooks",
        "description": "Endpoints that receive your organisation's events as signed POSTs, and their "
        "delivery log.",
    },
    {
        "name": "Audit",
        "description": "The public keys that sign audit checkpoints and job receipts, and the latest "
        "signed checkpoint (no sign-in needed).",
    },
    {
        "name": "Operators",
        "description": "Platform staff only, from a signed-in session (never a token): key rotation, "
        "crypto-shredding, top-ups and refunds.",
    },
]
TAG_NAMES = [tag["name"] for tag in TAGS]

# --- the page's opening section -------------------------------------------------------------------

GETTING_STARTED = """\
Custody and trading of AI training data: providers upload and seal datasets; trainers license them
and train models on them **without the data ever leaving custody**. Errors are
`application/problem+json` (`type`, `title`, `status`, `detail`, a stable `code`, and
`errors[{pointer, code, detail}]` for field errors). Amounts are decimal strings in the currency's
major units (`"150.00"`), with `amount_minor` beside them. Ids are public ids (`ofr_...`, `job_...`).

## Getting started: from a token to a verified model

Create a token in the portal (*Settings → API tokens*) with the scopes `read`, `order` and `train`,
then follow the tags from top to bottom. The Python SDK and CLI (`pip install ./sdk`) do the
same in five calls: see `docs/sdk.md` and `sdk/README.md` in the repository.

```sh
export SEALROOM=https://sealroom.example/api/v1 AUTH="Authorization: Bearer $SEALROOM_TOKEN"
# 1. Who am I, for which organisation, with which scopes
curl -H "$AUTH" $SEALROOM/me
# 2. Find a listing: each result carries its active offers with their price model and price
curl -H "$AUTH" "$SEALROOM/catalog/listings?q=support&price_model=fixed"
# 3. Price a usage under an offer's current terms
curl -H "$AUTH" "$SEALROOM/catalog/offers/ofr_5b2e0c9a1d7f3e48/quote"
# 4. Order it: escrowed from your balance. A retry with the same Idempotency-Key replays the order
curl -H "$AUTH" -H "Idempotency-Key: $(uuidgen)" -H "Content-Type: application/json" \\
     -d '{"offer_id": "ofr_5b2e0c9a1d7f3e48"}' $SEALROOM/orders          # -> "license_ref": "lic_..."
# 5. Submit a job under the license (also idempotent with a key)
curl -H "$AUTH" -H "Idempotency-Key: $(uuidgen)" -H "Content-Type: application/json" \\
     -d '{"license": "lic_9f1c2a7e4b6d8053", "template": "causal_lm_lora", "base": "base_0d4e6f8a2b1c3e57",
          "hyperparameters": {"epochs": 1}, "purpose": "research"}' $SEALROOM/training/jobs
# 6. Follow it: state, progress, loss, the release gate
curl -H "$AUTH" $SEALROOM/training/jobs/job_7a3c5e1f9b2d4068
curl -H "$AUTH" $SEALROOM/training/jobs/job_7a3c5e1f9b2d4068/metrics
# 7. Download the model and its signed receipt; verify offline against the published keys
curl -H "$AUTH" -o model.tar.gz $SEALROOM/training/jobs/job_7a3c5e1f9b2d4068/artifact
curl -H "$AUTH" -o receipt.json $SEALROOM/training/jobs/job_7a3c5e1f9b2d4068/receipt
curl $SEALROOM/audit/keys > keys.json
sealroom receipts verify receipt.json --artifact model.tar.gz --keys keys.json   # offline
```

Providers start at **Custody (providers)**: create a dataset, open a version, upload, process,
review, seal; then **Listings (providers)**: list the sealed version, add an offer, publish.

**Retries.** `POST /orders` and `POST /payouts` require an `Idempotency-Key`; every other `POST`
that creates something accepts one (see each operation). Same key and body: the first response
again; same key, another body: 422 `idempotency.key_reused`; first request still running: 409
`idempotency.in_progress` (retry shortly). **Rate limits** answer 429 with `Retry-After`.
"""


# --- operations ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Operation:
    """How one operation reads in the docs."""

    tag: str
    description: str
    example: Any = None  # the request body, for operations that take one
    summary: str = ""  # only where the view declares none
    extra_tags: tuple[str, ...] = field(default=())


OFFER = "ofr_5b2e0c9a1d7f3e48"
LICENSE = "lic_9f1c2a7e4b6d8053"
ORG = "org_3c8a1f0e5d7b9264"
VERSION = "dsv_1e9b7d3f5a2c4086"

TERMS_EXAMPLE: dict[str, Any] = {
    "version": 1,
    "permission": {
        "purposes": ["research"],
        "job_templates": ["causal_lm_lora", "seq_classification"],
        "weights_may_leave": True,
    },
    "constraint": {"max_jobs": 3, "max_epochs": 2, "max_tokens": 5_000_000, "term_days": 90},
    "duty": {"attribution": "Acme support tickets", "release_gate": {"max_exposure": 3.5}},
}

_ERRORS = "**Errors worth knowing:** "
_OPS = "**Who:** platform operators, from a signed-in session (tokens are refused); auditors may read. "

OPERATIONS: dict[str, Operation] = {
    # --- Getting started ---------------------------------------------------------------------------
    "common.api.views.MeApi.GET": Operation(
        "Getting started",
        "Your user, the organisations you belong to with your role in each, the organisation this "
        "request acts for, and (with a token) the token's scopes. The first call to make with a new "
        "token. **Who:** anyone signed in. " + _ERRORS + "401 for a missing, revoked or expired token.",
    ),
    "common.api.views.TokenListCreateApi.GET": Operation(
        "Getting started",
        "Your API tokens: name, organisation, scopes, last use, expiry. Secrets are never shown again. "
        "**Who:** anyone signed in; tokens with `read`.",
    ),
    "common.api.views.TokenListCreateApi.POST": Operation(
        "Getting started",
        "Create a token acting for one of your organisations, with the scopes it needs (`read`, "
        "`provide`, `order`, `train`, `admin`). The secret is in this response only: store it. "
        "Not idempotent on purpose: a replay would have to keep the secret; revoke a token you lost. "
        "**Who:** a member of the organisation (a token needs `admin`). " + _ERRORS + "403 "
        "`common.role_insufficient` (viewers create read-only tokens); 422 `common.token_invalid`.",
        example={
            "name": "ci-trainer",
            "organisation_id": ORG,
            "scopes": ["read", "order", "train"],
            "expires_in_days": 90,
        },
    ),
    "common.api.views.TokenRevokeApi.DELETE": Operation(
        "Getting started",
        "Revoke a token at once; requests with it answer 401 from now on. **Who:** its owner or an "
        "organisation admin (a token needs `admin`).",
    ),
    # --- Catalog ---------------------------------------------------------------------------------------
    "marketplace.api_catalog.TermsSchemaApi.GET": Operation(
        "Catalog",
        "The JSON Schema every offer's terms document follows: permissions (purposes, job templates, "
        "whether weights may leave), constraints (jobs, epochs, tokens, days, epsilon) and duties "
        "(attribution, the release gate). Public: no sign-in needed.",
    ),
    "marketplace.api_catalog.ListingListCreateApi.GET": Operation(
        "Catalog",
        "Published listings on sealed versions, newest first (best match first with `q`). Each "
        "result carries its **active offers with their price model and price** and current terms, "
        "so you can quote or order straight from the list. `mine=true` lists your organisation's "
        "own listings in any state. **Who:** any signed-in caller (`read`). " + _ERRORS + "422 for a "
        "malformed filter (a `provider` that is not an `org_...` id).",
    ),
    "marketplace.api_catalog.ListingDetailApi.GET": Operation(
        "Catalog",
        "One listing: description, statistics (records, tokens, languages, entity counts after "
        "desensitization), the approved preview, its offers (with every current price), the rights "
        "holders, and a link to its Croissant metadata. **Who:** anyone for a published listing; "
        "the provider also for its drafts. " + _ERRORS + "404 for another organisation's draft.",
    ),
    "marketplace.api_catalog.ListingCroissantApi.GET": Operation(
        "Catalog",
        "The listing as Croissant 1.1 JSON-LD (MLCommons), with its responsible-AI fields: what "
        "dataset tooling reads. **Who:** as for the listing.",
    ),
    "marketplace.api_catalog.OfferDetailApi.GET": Operation(
        "Catalog",
        "An offer with every version of its terms (newest first), each with its price and the terms "
        "in plain words. An order pins the version in force when it is placed. **Who:** as for the "
        "listing.",
    ),
    # --- Quotes & orders ----------------------------------------------------------------------------
    "marketplace.api_catalog.OfferQuoteApi.GET": Operation(
        "Quotes & orders",
        "What an order would cost under the offer's current terms, and how much would be escrowed: "
        "the whole price (fixed), the token cap at the unit price (metered) or the periods "
        "(per-period). Changes nothing. **Who:** any signed-in caller (`read`). " + _ERRORS + "409 "
        "`marketplace.offer_retired`; 422 for a usage that does not parse.",
    ),
    "marketplace.api_orders.OrderListCreateApi.GET": Operation(
        "Quotes & orders",
        "Orders your organisation placed, newest first, each with its state and `license_ref` once "
        "paid. **Who:** members of a trainer organisation (`read`).",
    ),
    "marketplace.api_orders.OrderListCreateApi.POST": Operation(
        "Quotes & orders",
        "Buy an offer: the escrow is taken from your balance now, and a license (`license_ref`, "
        "`lic_...`) is issued at once, or when the provider approves if the listing requires "
        "approval. Submit jobs with that `license_ref`. **Requires an `Idempotency-Key`**: a retry "
        "with the same key and body returns the same order (201) and charges nothing more. "
        "**Who:** a member of a trainer organisation (`order`). " + _ERRORS + "409 "
        "`marketplace.insufficient_funds` (top up first), `marketplace.offer_retired`, an exclusive "
        "license already taken; 422 `idempotency.key_required`, `idempotency.key_reused`.",
        example={"offer_id": OFFER},
    ),
    "marketplace.api_orders.OrderDetailApi.GET": Operation(
        "Quotes & orders",
        "One order by its reference (`ord_...`): state, pinned terms and price, escrow, "
        "`license_ref`. **Who:** its buyer or the listing's provider.",
    ),
    "marketplace.api_orders.OrderReceivedListApi.GET": Operation(
        "Quotes & orders",
        "Orders placed on your organisation's listings, newest first; `state=pending` lists those "
        "waiting for your approval. **Who:** members of the provider organisation (`read`).",
    ),
    "marketplace.api_orders.OrderApproveApi.POST": Operation(
        "Quotes & orders",
        "Approve a pending order: it is paid from its escrow and the buyer's license is issued. "
        "**Who:** a provider admin (`provide`). " + _ERRORS + "409 for an order that is no longer "
        "pending (approved, rejected, timed out).",
    ),
    "marketplace.api_orders.OrderRejectApi.POST": Operation(
        "Quotes & orders",
        "Reject a pending order with a reason the buyer sees; its escrow goes back to the buyer's "
        "balance. **Who:** a provider admin (`provide`). " + _ERRORS + "409 for an order that is no "
        "longer pending.",
        example={"reason": "This listing is for non-commercial research groups only."},
    ),
    # --- Licenses --------------------------------------------------------------------------------------
    "marketplace.api_orders.LicenseListApi.GET": Operation(
        "Licenses",
        "Your organisation's licenses (`lic_...`), newest first, with what each has left: jobs, "
        "tokens, epsilon and time. **Who:** members of the licensee (`read`).",
    ),
    "marketplace.api_orders.LicenseDetailApi.GET": Operation(
        "Licenses",
        "One license by reference: its state, terms, escrow released and refunded, and what is left. "
        "**Who:** the licensee or the provider. " + _ERRORS + "404 for a license you do not hold.",
    ),
    "training.api.LicenseListApi.GET": Operation(
        "Licenses",
        "The licenses your organisation may submit training jobs under, with their terms and jobs "
        "already reserved. `license` is the reference to send when submitting a job. **Who:** "
        "members of a trainer organisation (`read`).",
    ),
    # --- Training jobs -------------------------------------------------------------------------------
    "training.api.TemplateListApi.GET": Operation(
        "Training jobs",
        "The job templates (causal LM, LoRA, sequence classification), their hyperparameters with "
        "defaults and bounds, and whether each supports differential privacy. Pick one before "
        "submitting. **Who:** any signed-in caller.",
    ),
    "training.api.BaseListUploadApi.GET": Operation(
        "Training jobs",
        "Base models you may start from: the built-in ones and those your organisation uploaded and "
        "the sandbox validated. Send the base's `id` when submitting. **Who:** any signed-in caller.",
    ),
    "training.api.BaseListUploadApi.POST": Operation(
        "Training jobs",
        "Upload your own base: a Hugging Face model directory as a `.zip` or `.tar.gz` body, named "
        "with `?name=`. It is validated in the sandbox (architecture, size, no code) before jobs "
        "may use it; poll `GET /training/bases/{id}`. Not idempotent (a binary body): check the "
        "list before retrying. **Who:** a trainer member (`train`). " + _ERRORS + "413 above the "
        "size limit; 415 for another format; 422 `training.base_name_invalid`.",
        example="(the bytes of my-base.zip: config.json, model.safetensors, tokenizer files)",
    ),
    "training.api.BaseDetailApi.GET": Operation(
        "Training jobs",
        "A base model and its validation state (or why it failed). **Who:** anyone for built-in "
        "bases; the uploading organisation for its own.",
    ),
    "training.api.JobListSubmitApi.GET": Operation(
        "Training jobs",
        "Your organisation's jobs, newest first, with state, progress and the license each ran "
        "under. **Who:** members of the trainer organisation (`read`).",
    ),
    "training.api.JobListSubmitApi.POST": Operation(
        "Training jobs",
        "Queue a training job on the licensed data, which never leaves custody. Name the license "
        "with `license` (the `lic_...` reference your order returned); `grant` (the license's "
        "`gnt_...` grant id; an old integer id answers 404 like an unknown one) is deprecated and "
        "goes in the next release. The job is checked against the template and the "
        "license's terms, and **spends one job of the license** (and, with DP, its epsilon). Send "
        "an `Idempotency-Key`: a retried submit with the same key and body returns the same job "
        "(202) and spends nothing more. Then follow `GET /training/jobs/{id}`. **Who:** a trainer "
        "member (`train`). " + _ERRORS + "422 `training.license_required` (neither or both of "
        "`license` and `grant`), `training.licenses_incompatible` (a mixed job, `licenses`: each "
        "conflicting term of each license, `/licenses/<i>/terms/<term>`), `training.spec_invalid` "
        "and `training.*_not_permitted` with "
        "pointers into the body; 404 `training.license_not_found`; 409 `training.license_exhausted`, "
        "`training.privacy_budget_exceeded`, a revoked or expired license.",
        example={
            "license": LICENSE,
            "template": "causal_lm_lora",
            "base": "base_0d4e6f8a2b1c3e57",
            "hyperparameters": {"epochs": 1, "learning_rate": 0.0005},
            "purpose": "research",
        },
    ),
    "training.valuation_api.ValuationSubmitApi.POST": Operation(
        "Training jobs",
        "Value a dataset version's records (KNN-Shapley over MiniLM embeddings) as a job in the "
        "sandbox; no record leaves custody. Either `version_id`, your organisation's own version "
        "(an admin; no license, nothing billed), or `license`, a license you hold whose terms "
        "allow the `valuation` template. `validation_version_id` names a labelled version your "
        "organisation owns as the validation set; without it a seeded hold-out is used. Only "
        "aggregates leave (per contribution, a histogram, a summary), each over at least "
        "`min_group` records; it spends no privacy budget. Follow it at `GET /training/jobs/{id}` "
        "and read the aggregates at `/training/jobs/{id}/metrics`. **Who:** a provider admin "
        "(`provide`) or a trainer member (`train`). " + _ERRORS + "422 "
        "`training.valuation_target_required` (neither or both of `version_id` and `license`), "
        "`training.spec_invalid` with pointers; 404 `training.version_not_found`, "
        "`training.license_not_found`.",
        example={"version_id": VERSION, "label_field": "label", "valuation": {"k": 5, "min_group": 20}},
    ),
    "training.api.JobDetailApi.GET": Operation(
        "Training jobs",
        "A job: state (`queued`, `running`, `releasing` (the release gate), `succeeded`, `failed`, "
        "`cancelled`), progress "
        "(step, loss, tokens per second, ETA), failure reason, and its event history. Poll it every "
        "few seconds to follow a job. **Who:** members of the job's organisation.",
    ),
    "training.api.JobCancelApi.POST": Operation(
        "Training jobs",
        "Cancel a job: a queued one at once (its epsilon reservation is released), a running "
        "one at its next batch. **Who:** a trainer member (`train`). " + _ERRORS + "409 "
        "`training.job_finished`.",
    ),
    "training.api.JobMetricsApi.GET": Operation(
        "Training jobs",
        "Validation metrics, the loss curve (windowed means; none under DP) and the release gate's "
        "verdict (memorisation exposure against the license's threshold). **Who:** members of the "
        "job's organisation.",
    ),
    # --- Artifacts & receipts --------------------------------------------------------------------
    "training.api.JobArtifactApi.GET": Operation(
        "Artifacts & receipts",
        "Download the trained model as a `.tar.gz` (weights, tokenizer, model card), when the job "
        "succeeded and the license lets weights leave custody. Audited. **Who:** members of the "
        "job's organisation. " + _ERRORS + "409 `training.artifact_not_ready`, "
        "`training.weights_in_custody`.",
    ),
    "training.api.JobReceiptApi.GET": Operation(
        "Artifacts & receipts",
        "The job's receipt, signed with Ed25519: dataset version, license, base, hyperparameters, "
        "epsilon spent, the gate's verdict and the hash of every artifact file. Verify it offline "
        "against `GET /audit/keys` (`sealroom receipts verify`). **Who:** members of the job's "
        "organisation. " + _ERRORS + "409 `training.artifact_not_ready`.",
    ),
    # --- Custody (providers) ---------------------------------------------------------------------
    "custody.api.DatasetListCreateApi.GET": Operation(
        "Custody (providers)",
        "Datasets your organisation owns, with their versions. **Who:** members (`read`).",
    ),
    "custody.api.DatasetListCreateApi.POST": Operation(
        "Custody (providers)",
        "Create a dataset (a name and a desensitization policy); then open a version and upload "
        "into it. Accepts an `Idempotency-Key`. **Who:** a provider member (`provide`). "
        + _ERRORS
        + "409 for a name your organisation already uses; 422 for an invalid policy.",
        example={"name": "support-tickets", "description": "Customer support tickets, 2023-2025"},
    ),
    "custody.api.VersionCreateApi.POST": Operation(
        "Custody (providers)",
        "Open a new version of a dataset to upload into, optionally with a privacy budget "
        "(`epsilon_cap`) that all its licenses share. Accepts an `Idempotency-Key`. **Who:** a "
        "provider member (`provide`).",
        example={"epsilon_cap": "8.000"},
    ),
    "custody.api.VersionDetailApi.GET": Operation(
        "Custody (providers)",
        "A version: its state (`open`, `processing`, `review`, `sealed`, ...), processing progress, "
        "contributions and counts. Poll it after `process`. **Who:** the owner and its "
        "contributors.",
    ),
    "custody.api.ContributorInviteApi.POST": Operation(
        "Custody (providers)",
        "Let another provider organisation upload into this version; its records earn it a share "
        "of the rights. Accepts an `Idempotency-Key`. **Who:** the owner's members (`provide`). "
        + _ERRORS
        + "409 for a version no longer open.",
        example={"organisation_id": ORG},
    ),
    "custody.api.ContributionStartApi.POST": Operation(
        "Custody (providers)",
        "Start an upload: name the file and its format, then `PUT` its parts and `POST .../complete`. "
        "Parts may be re-sent, so an interrupted upload resumes. Accepts an `Idempotency-Key`. "
        "**Who:** the owner or a contributor (`provide`). " + _ERRORS + "409 for a version no longer "
        "open; 413 above the size limit.",
        example={"filename": "tickets.jsonl", "format": "jsonl", "text_fields": ["text"], "size": 10485760},
    ),
    "custody.api.ContributionDetailApi.GET": Operation(
        "Custody (providers)",
        "An upload and the part numbers received so far: what to re-send to resume. **Who:** the "
        "uploading organisation.",
    ),
    "custody.api.ContributionDetailApi.DELETE": Operation(
        "Custody (providers)",
        "Abandon an unfinished upload; the parts received are crypto-shredded. **Who:** the "
        "uploading organisation (`provide`). " + _ERRORS + "409 for a completed upload.",
    ),
    "custody.api.ContributionPartApi.PUT": Operation(
        "Custody (providers)",
        "Upload one part (the raw bytes, numbered from 1); re-sending a part replaces it, so a retry "
        "is safe. Parts are encrypted as they arrive. **Who:** the uploading organisation "
        "(`provide`). " + _ERRORS + "413 above the part size; 409 for a completed upload.",
        example='{"text": "My order #1234 never arrived"}\n{"text": "How do I reset my password?"}\n',
    ),
    "custody.api.ContributionCompleteApi.POST": Operation(
        "Custody (providers)",
        "Finish an upload: its parts are joined and checked, and ingest starts. **Who:** the "
        "uploading organisation (`provide`). " + _ERRORS + "422 for missing parts or invalid content; "
        "409 `custody.upload_complete` when it is already complete.",
    ),
    "custody.api.VersionProcessApi.POST": Operation(
        "Custody (providers)",
        "Close uploads and process the version: parse, desensitize (PII replaced), screen, count. "
        "Follow `GET /versions/{id}`; then read the report. **Who:** the owner (`provide`). "
        + _ERRORS
        + "409 for a version with no completed upload or already processing.",
    ),
    "custody.api.VersionRetryApi.POST": Operation(
        "Custody (providers)",
        "Retry processing a version whose ingest failed. **Who:** the owner (`provide`). "
        + _ERRORS
        + "409 for a version that did not fail.",
    ),
    "custody.api.ReportApi.GET": Operation(
        "Custody (providers)",
        "The desensitization report: records kept and dropped, entities replaced by type and "
        "language, the residual-risk estimate, and the screening findings summary. **Who:** the "
        "owner and contributors. " + _ERRORS + "409 before processing finished.",
    ),
    "custody.api.ReportSamplesApi.GET": Operation(
        "Custody (providers)",
        "Before/after samples by language and entity type, to judge the desensitization. Reading "
        "them is audited. **Who:** the owner's members.",
    ),
    "custody.api.ReportResidualApi.GET": Operation(
        "Custody (providers)",
        "Sampled records where the strict detector still found something after desensitization. "
        "Audited. **Who:** the owner's members.",
    ),
    "custody.api.FindingListApi.GET": Operation(
        "Custody (providers)",
        "Screening findings (duplicates, toxicity, secrets, ...), each with whether it will be "
        "dropped at sealing. **Who:** the owner and contributors.",
    ),
    "custody.api.FindingListApi.POST": Operation(
        "Custody (providers)",
        "Mark findings' records to drop (or keep) when the version is sealed. **Who:** the owner "
        "(`provide`). " + _ERRORS + "409 for a sealed version; 422 for unknown finding ids.",
        example={"finding_ids": [101, 102], "drop": True},
    ),
    "custody.api.VersionSealApi.POST": Operation(
        "Custody (providers)",
        "Apply the drops and seal: the version becomes immutable and can be listed. Above the "
        "residual-risk threshold, confirm with `confirm_residual_risk`. **Who:** the owner "
        "(`provide`). " + _ERRORS + "409 for a version not in review; 422 "
        "`custody.residual_risk_unconfirmed`.",
        example={"confirm_residual_risk": False},
    ),
    "custody.api.VersionRejectApi.POST": Operation(
        "Custody (providers)",
        "Reject the version instead of sealing it (or abandon one still uploading); its quarantined "
        "uploads are crypto-shredded. **Who:** the owner (`provide`). " + _ERRORS + "409 "
        "`custody.cannot_reject` for a sealed version.",
        example={"reason": "Wrong export: contains internal notes."},
    ),
    "custody.api_ops.VersionTakedownApi.POST": Operation(
        "Custody (providers)",
        "Take a version down: its listings are withdrawn, licenses revoked, running jobs stopped at "
        "their next batch, queued ones cancelled, unreleased escrow refunded, withheld artifacts "
        "destroyed, and trainers notified. Cannot be undone. **Who:** a provider admin of the "
        "owner, or an operator. " + _ERRORS + "409 for a version already taken down.",
        example={"reason": "A contributor withdrew consent for their records."},
    ),
    "custody.api_withdrawal.ContributionWithdrawApi.POST": Operation(
        "Custody (providers)",
        "Withdraw one of your organisation's contributions from a sealed version, a pooled one "
        "included. The version closes to new jobs at once; a background step seals a new version "
        "from the other contributions (new key, new Merkle root) and moves the licenses to it with "
        "their terms unchanged; holders of released weights trained on the records are notified. "
        "Answers 202 with the withdrawal; follow it at `GET /withdrawals/{id}`. Asking again returns "
        "the same withdrawal. Cannot be undone. **Who:** an admin of the contributing organisation "
        "(`provide`), or an operator from a session. " + _ERRORS + "409 for a version not sealed, "
        "already superseded by another withdrawal, a contribution with no record left in it, or the "
        "only contribution with records (take the version down).",
        example={"reason": "Our consent to share these records ended."},
    ),
    "custody.api_withdrawal.WithdrawalDetailApi.GET": Operation(
        "Custody (providers)",
        "A withdrawal: its state (`pending` while re-sealing, then `done`), the closed and the new "
        "version, and its lineage: every recorded read of the withdrawn records (the job, the "
        "licensee, the version read, the platform tokens, whether settled). **Who:** members of the "
        "withdrawing or the owning organisation (`read`), platform staff. " + _ERRORS,
    ),
    # --- Listings (providers) --------------------------------------------------------------------
    "marketplace.api_catalog.ListingListCreateApi.POST": Operation(
        "Listings (providers)",
        "Draft a listing of one of your sealed versions: title, description, tags, languages, "
        "currency, and whether orders need your approval. Trainers see it once published. Accepts "
        "an `Idempotency-Key`. **Who:** a provider member (`provide`). " + _ERRORS + "409 for a "
        "version that is not sealed.",
        example={
            "version_id": VERSION,
            "title": "Support tickets (EN/DE)",
            "domain_tags": ["support"],
            "languages": ["en", "de"],
            "currency": "EUR",
        },
    ),
    "marketplace.api_catalog.ListingDetailApi.PATCH": Operation(
        "Listings (providers)",
        "Edit a listing's text, tags, languages, currency or approval setting. Orders already placed "
        "keep what they bought. **Who:** a provider member (`provide`). " + _ERRORS + "409 for a "
        "withdrawn listing.",
        example={"description": "45,000 desensitized support tickets, English and German."},
    ),
    "marketplace.api_catalog.ListingPublishApi.POST": Operation(
        "Listings (providers)",
        "Publish a draft: it appears in the catalog and its offers can be ordered; the rights "
        "holders are shown from the start (the contributions' default allocation if none is in "
        "force). **Who:** a provider admin (`provide`). " + _ERRORS + "409 "
        "`marketplace.listing_no_offers` (add an offer first), or a listing not in draft.",
    ),
    "marketplace.api_catalog.ListingWithdrawApi.POST": Operation(
        "Listings (providers)",
        "Withdraw a listing from the catalog: no new orders; licenses already sold stay valid. "
        "**Who:** a provider admin (`provide`).",
        example={"reason": "Superseded by version 3."},
    ),
    "marketplace.api_catalog.PreviewCandidatesApi.GET": Operation(
        "Listings (providers)",
        "Desensitized records you may pick the public preview from. Reading them is audited. "
        "**Who:** the provider's members.",
    ),
    "marketplace.api_catalog.PreviewPickApi.PUT": Operation(
        "Listings (providers)",
        "Pick up to 50 candidate records as the listing's preview; trainers see it only after an "
        "admin approves it. **Who:** a provider member (`provide`). " + _ERRORS + "422 for a record "
        "that is not a candidate.",
        example={"record_ids": [3, 17, 42]},
    ),
    "marketplace.api_catalog.PreviewApproveApi.POST": Operation(
        "Listings (providers)",
        "Approve the picked preview: trainers can now see those records. **Who:** a provider admin "
        "(`provide`).",
    ),
    "marketplace.api_catalog.OfferCreateApi.POST": Operation(
        "Listings (providers)",
        "Add an offer: a terms document (see `GET /catalog/terms-schema`) and a price: `fixed` (once), "
        "`metered` (per platform token, up to the license's cap) or `period` (per `period_days`). "
        "`unit_price` is a decimal string in the listing's currency. Accepts an `Idempotency-Key`. "
        "**Who:** a provider member (`provide`). " + _ERRORS + "422 with a pointer into `terms` or "
        "`price`.",
        example={
            "name": "Research",
            "terms": TERMS_EXAMPLE,
            "price": {"model": "fixed", "unit_price": "500.00"},
        },
    ),
    "marketplace.api_catalog.OfferTermsApi.POST": Operation(
        "Listings (providers)",
        "Publish new terms (and price) for an offer as its next version; orders already placed keep "
        "the version they bought. Accepts an `Idempotency-Key`. **Who:** a provider member "
        "(`provide`). " + _ERRORS + "409 for a retired offer; 422 with a pointer.",
        example={
            "terms": TERMS_EXAMPLE,
            "price": {"model": "period", "unit_price": "90.00", "period_days": 30},
        },
    ),
    "marketplace.api_catalog.OfferRetireApi.POST": Operation(
        "Listings (providers)",
        "Stop selling an offer; its licenses stay valid. **Who:** a provider member (`provide`).",
    ),
    "marketplace.api_catalog.ListingRightsApi.GET": Operation(
        "Listings (providers)",
        "Who is paid from this listing's sales: the rights allocation in force (holders and basis "
        "points) and its history. **Who:** anyone for a published listing.",
    ),
    "marketplace.api_catalog.ListingRightsApi.POST": Operation(
        "Listings (providers)",
        "Propose shares (basis points, summing to 10000) for the rights holders; each other holder's "
        "admin approves before it is in force. Accepts an `Idempotency-Key`. **Who:** the provider's "
        "admin (`provide`). " + _ERRORS + "422 `marketplace.invalid_split`.",
        example={"shares": {ORG: 7000, "org_8d2f4b6a0c1e3957": 3000}},
    ),
    "marketplace.api_catalog.AllocationApproveApi.POST": Operation(
        "Listings (providers)",
        "Approve proposed shares as a holder; the allocation is in force once every holder approved. "
        "**Who:** a holder organisation's admin (`provide`).",
    ),
    "marketplace.api_catalog.AllocationRejectApi.POST": Operation(
        "Listings (providers)",
        "Reject proposed shares as a holder; the allocation in force stays. **Who:** a holder "
        "organisation's admin (`provide`).",
    ),
    # --- Money -----------------------------------------------------------------------------------------
    "marketplace.api_orders.BalanceApi.GET": Operation(
        "Money",
        "Your organisation's balances per currency: available to spend, held in escrow, and owed to "
        "you (payable). **Who:** members (`read`).",
    ),
    "marketplace.api_orders.PayoutListCreateApi.GET": Operation(
        "Money",
        "Your organisation's payouts and their state. **Who:** members (`read`).",
    ),
    "marketplace.api_orders.PayoutListCreateApi.POST": Operation(
        "Money",
        "Pay out part or all of what you are owed to your bank account. **Requires an "
        "`Idempotency-Key`**: a retry returns the same payout. **Who:** a provider admin "
        "(`provide`). " + _ERRORS + "409 `marketplace.payout_exceeds_payable`.",
        example={"amount": "200.00", "currency": "EUR"},
    ),
    "marketplace.api_orders.EarningsApi.GET": Operation(
        "Money",
        "What your organisation earned as a rights holder, per period and listing. **Who:** members "
        "(`read`). " + _ERRORS + "422 for a malformed period.",
    ),
    "marketplace.api_orders.SpendApi.GET": Operation(
        "Money",
        "What your organisation spent, per order. **Who:** members (`read`). " + _ERRORS + "422 for a "
        "malformed period.",
    ),
    "marketplace.api_orders.OpsTopUpListCreateApi.GET": Operation(
        "Money",
        "Recorded top-ups. " + _OPS,
        extra_tags=("Operators",),
    ),
    "marketplace.api_orders.OpsTopUpListCreateApi.POST": Operation(
        "Money",
        "Credit an organisation's balance with a transfer the bank received. Once per "
        "`external_ref`: recording the same reference again returns the first top-up (the "
        "reference is the idempotency key). " + _OPS + _ERRORS + "409 for a reference already "
        "recorded with another amount.",
        example={
            "organisation_id": ORG,
            "amount": "1000.00",
            "currency": "EUR",
            "external_ref": "SEPA-2026-000123",
        },
        extra_tags=("Operators",),
    ),
    "marketplace.api_orders.OpsLicenseRefundApi.POST": Operation(
        "Money",
        "Refund a license: with `consumer_ref`, undo one failed job's releases back to escrow; "
        "without, revoke the license and refund its unreleased escrow. Each refund happens once "
        "(a repeat answers 409). " + _OPS,
        example={"reason": "Job failed on a platform fault.", "consumer_ref": "job:4711"},
        extra_tags=("Operators",),
    ),
    # --- Organisation ----------------------------------------------------------------------------
    "common.api.views.MemberListApi.GET": Operation(
        "Organisation",
        "Members of an organisation and their roles. **Who:** its members.",
    ),
    "common.api.views.MemberDetailApi.GET": Operation(
        "Organisation",
        "One member. **Who:** the organisation's members.",
    ),
    "common.api.views.MemberDetailApi.PATCH": Operation(
        "Organisation",
        "Change a member's role (`admin`, `member`, `viewer`). **Who:** an admin (`admin`). "
        + _ERRORS
        + "409 for removing the last admin.",
        example={"role": "member"},
    ),
    "common.api.views.MemberDetailApi.DELETE": Operation(
        "Organisation",
        "Remove a member; their tokens for this organisation are revoked. **Who:** an admin "
        "(`admin`). " + _ERRORS + "409 for the last admin.",
    ),
    "common.api.views.InvitationCreateApi.POST": Operation(
        "Organisation",
        "Invite someone by e-mail with a role; the link is mailed, never returned. Accepts an "
        "`Idempotency-Key`. **Who:** an admin (`admin`). " + _ERRORS + "409 for someone already a "
        "member.",
        example={"email": "dana@example.org", "role": "member"},
    ),
    "common.api.webhooks.NotificationListApi.GET": Operation(
        "Organisation",
        "The organisation's notifications (orders, jobs, takedowns, payouts), newest first. "
        "**Who:** members.",
    ),
    "common.api.webhooks.NotificationListApi.POST": Operation(
        "Organisation",
        "Mark notifications read (all, without `ids`). Repeating it is harmless. **Who:** members "
        "(any write scope).",
        example={"ids": [12, 13]},
    ),
    # --- Webhooks ------------------------------------------------------------------------------------
    "common.api.webhooks.WebhookListApi.GET": Operation(
        "Webhooks",
        "Your organisation's webhook endpoints. **Who:** admins.",
    ),
    "common.api.webhooks.WebhookListApi.POST": Operation(
        "Webhooks",
        "Register an https endpoint for some or all event kinds (`order.paid`, `job.*`, ...). Each "
        "delivery is a POST signed with the secret returned here once (store it). Not idempotent "
        "on purpose: a replay would have to keep the secret; delete a duplicate. **Who:** an admin "
        "(`admin`). " + _ERRORS + "422 for a private or non-http(s) URL.",
        example={"url": "https://hooks.example.org/sealroom", "event_kinds": ["order.*", "job.succeeded"]},
    ),
    "common.api.webhooks.WebhookDetailApi.GET": Operation(
        "Webhooks",
        "One endpoint. **Who:** admins.",
    ),
    "common.api.webhooks.WebhookDetailApi.PATCH": Operation(
        "Webhooks",
        "Enable or disable an endpoint; disabling fails its pending deliveries. **Who:** an admin (`admin`).",
        example={"active": False},
    ),
    "common.api.webhooks.WebhookDetailApi.DELETE": Operation(
        "Webhooks",
        "Delete an endpoint and its delivery log. **Who:** an admin (`admin`).",
    ),
    "common.api.webhooks.WebhookDeliveryListApi.GET": Operation(
        "Webhooks",
        "An endpoint's deliveries, newest first: status, attempts, the receiver's answer. **Who:** admins.",
    ),
    # --- Audit -----------------------------------------------------------------------------------------
    "common.api.audit.AuditPublicKeysApi.GET": Operation(
        "Audit",
        "The public keys (Ed25519 PEM, by key id) that sign audit checkpoints and job receipts. "
        "Fetch them once and verify receipts offline. Public: no sign-in needed.",
        extra_tags=("Artifacts & receipts",),
    ),
    "common.api.audit.AuditCheckpointLatestApi.GET": Operation(
        "Audit",
        "The latest signed checkpoint of the audit log (sequence, chain hash, signature), or null "
        "before the first. Keep copies: a truncated log is detectable back to the last one you hold. "
        "Public.",
    ),
    # --- Operators -------------------------------------------------------------------------------
    "custody.api_ops.OpsKeyListApi.GET": Operation(
        "Operators",
        "The current master key version and every dataset version's key state. " + _OPS,
    ),
    "custody.api_ops.OpsKeyRotateApi.POST": Operation(
        "Operators",
        "Rotate the master key; with `rewrap_all`, rewrap every key-encryption key under it now. "
        "Audited. " + _OPS,
        example={"rewrap_all": True},
    ),
    "custody.api_ops.OpsVersionKeyApi.GET": Operation(
        "Operators",
        "A version's key: state, master version, shred timing. " + _OPS,
    ),
    "custody.api_ops.OpsVersionKeyRewrapApi.POST": Operation(
        "Operators",
        "Rewrap the version's key-encryption key under the current master key. " + _OPS,
    ),
    "custody.api_ops.OpsVersionDataKeyRotateApi.POST": Operation(
        "Operators",
        "Re-encrypt a sealed version's records under a new data key (queued). " + _OPS,
    ),
    "custody.api_ops.OpsVersionKeyDisableApi.POST": Operation(
        "Operators",
        "Crypto-shred step 1: disable the version's key (reversible) and start the destroy delay. " + _OPS,
        example={"reason": "Takedown TD-2026-007: court order."},
    ),
    "custody.api_ops.OpsVersionKeyEnableApi.POST": Operation(
        "Operators",
        "Undo a disable before the key is destroyed. " + _OPS,
        example={"reason": "Takedown withdrawn."},
    ),
    "marketplace.api_model_listings.ModelListingListCreateApi.GET": Operation(
        "Models in custody",
        "Published model listings: each names its custody model (`job_...`), its terms (purposes, "
        "inference price per million tokens, per-call limit, cap, the model share), the facts that "
        "left the sandbox (receipt hash, validation metrics, data lineage: each version's Merkle "
        "root and license) and its rights holders with exact shares. **Who:** any signed-in caller.",
    ),
    "marketplace.api_model_listings.ModelListingListCreateApi.POST": Operation(
        "Models in custody",
        "List a model your organisation trained under a license that kept the weights in custody; "
        "published at once with one metered offer. `terms.model_share_bps` is the trainer's share "
        "of every release, the data's holders share the rest by the version's allocation. **Who:** "
        "the trainer's admin (`provide` or `train`). " + _ERRORS + "404 `custody.model_not_found` "
        "(no such model, or not yours); 422 `marketplace.terms_invalid` with pointers under "
        "`/terms`; 409 `marketplace.listing_exists`, `marketplace.version_not_sealed`.",
        example={
            "model": "job_7a3c9e1f5b2d4086",
            "title": "Support-ticket LM",
            "terms": {
                "purposes": ["research"],
                "inference": {
                    "allowed": True,
                    "price_per_million_tokens": "2.50",
                    "currency": "EUR",
                    "max_tokens_per_call": 256,
                    "cap_tokens": 1000000,
                },
                "distillation_allowed": False,
                "generation_allowed": False,
                "fine_tune_allowed": False,
                "model_share_bps": 3000,
                "term_days": 30,
            },
        },
    ),
    "marketplace.api_model_listings.ModelListingDetailApi.GET": Operation(
        "Models in custody",
        "One published model listing (as in the list). **Who:** any signed-in caller.",
    ),
    "marketplace.api_model_listings.ModelLicenseBuyApi.POST": Operation(
        "Models in custody",
        "Buy a model license for `tokens` platform tokens of inference: their price is escrowed from "
        "your balance and released as calls are metered; the unused rest is refunded at expiry. "
        "Send an `Idempotency-Key`. **Who:** a trainer member (`order`). " + _ERRORS + "422 "
        "`marketplace.amount_invalid` (`/tokens` outside 1..the cap); 409 "
        "`marketplace.insufficient_funds`, `marketplace.own_listing`; 403 "
        "`marketplace.inference_not_offered`.",
        example={"tokens": 1000000},
    ),
    "training.api_models.ModelGenerateApi.POST": Operation(
        "Models in custody",
        "Generate with a custody model you hold a license for (a causal LM). Answers 202 with the "
        "call; poll `GET /models/calls/{id}`. Each output passes the extraction guard (the training "
        "job's canaries and verbatim overlap with the custody records): a withheld output says so "
        "and never carries the text. Prompts are not kept after the call. **Who:** a licensee "
        "member (`train`). " + _ERRORS + "404 `training.model_not_licensed`; 422 "
        "`training.inference_invalid` (`/prompts/{i}` empty or binary), `training.too_many_tokens`, "
        "`training.task_mismatch`; 409 `training.inference_cap_reached`.",
        example={"prompts": ["Summarise the ticket:"], "max_new_tokens": 32},
    ),
    "training.api_models.ModelClassifyApi.POST": Operation(
        "Models in custody",
        "Classify texts with a custody classification model you hold a license for. Answers 202 "
        "with the call; poll it. **Who:** a licensee member (`train`). " + _ERRORS + "as generate.",
        example={"prompts": ["The invoice arrived late again."]},
    ),
    "training.api_models.InferenceCallDetailApi.GET": Operation(
        "Models in custody",
        "One inference call: state (`queued`, `running`, `succeeded`, `failed`), the guarded "
        "outputs, how many were withheld, prompt and output platform tokens (what is metered). "
        "**Who:** members of the calling organisation.",
    ),
    "custody.api_ops.OpsVersionKeyDestroyApi.POST": Operation(
        "Operators",
        "Crypto-shred step 2: destroy the key for good, after the delay, on a taken-down version; "
        "type the version's label back to confirm. Irreversible. " + _OPS,
        example={"confirm": "acme/support-tickets/v2"},
    ),
}


def operation_key(view: Any, method: str) -> str:
    """The catalogue key of ``view``'s ``method``: ``"<module>.<class>.<METHOD>"``."""
    cls = type(view)
    return f"{cls.__module__}.{cls.__qualname__}.{method.upper()}"


def operation_doc(view: Any, method: str) -> Operation | None:
    """The catalogue's entry for an operation, if it has one."""
    return OPERATIONS.get(operation_key(view, method))
