"""Mixed-dataset jobs (issue 17 item 3): several licenses, mixing weights, one admission rule.

- The rule as a property: over random pairs of terms, a mixed job is admitted if and only if
  every component license allows it (an oracle written here, term by term), and what the
  combination allows is the intersection / all / any / minimum / union the issue names.
  Once on the pure rule (every term), once through the service and the database against
  single-license submits of the same request.
- Named conflicts through the API (research-only with commercial; weights-stay with
  weights-leave): 422 whose errors point at each conflicting term of each license.
- Admission reserves per license: a job slot on each grant, each version's epsilon on its own
  budget, the tokens each license's version supplies.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from django.db import transaction
from hypothesis import given, settings
from hypothesis import strategies as st

from common.exceptions import Conflict, Invalid
from custody.models import DatasetVersion, Grant, GrantJob, PrivacyBudgetEntry
from tests.grants import grant_for_test
from tests.marketplace.catalog.conftest import sealed_rows  # noqa: F401
from tests.training.conftest import TINY_HP
from tests.training.test_submit import URL, assert_nothing_stored, assert_problem
from training.models import BaseModel, JobGrant, TrainingJob
from training.services import JobRequest, job_submit
from training.services.mixed_jobs import MixPart, job_submit_mixed, planned_tokens, weights_bps
from training.services.mixing import Component, MixRequest, combine

PURPOSES = ["research", "commercial", "internal"]
TEMPLATES = ["causal_lm", "causal_lm_lora", "seq_classification"]


# --- the rule, pure ------------------------------------------------------------------------------


def allows(component: Component, request: MixRequest) -> dict[str, bool]:
    """The oracle: each term of one license, checked against the request on its own."""
    t = component.terms
    purposes, templates = t.get("purposes") or [], t.get("job_templates") or []
    return {
        "purposes": not purposes or request.purpose in purposes,
        "job_templates": not templates or request.template in templates,
        "max_epochs": t.get("max_epochs") is None or request.epochs <= t["max_epochs"],
        "dp": request.dp or not (t.get("dp_required") or component.epsilon_cap),
        "weights_may_leave": not request.weights_leave or bool(t.get("weights_may_leave")),
        "exclusive_use": not t.get("exclusive_use"),
    }


def terms_strategy() -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {
            "purposes": st.lists(st.sampled_from(PURPOSES), unique=True, max_size=3),
            "job_templates": st.lists(st.sampled_from(TEMPLATES), unique=True, max_size=3),
            "max_epochs": st.none() | st.integers(1, 4),
            "dp_required": st.booleans(),
            "weights_may_leave": st.booleans(),
            "exclusive_use": st.booleans(),
            "attribution": st.sampled_from(["", "Acme support tickets", "Cora Texts, CC BY 4.0"]),
            "gate_max_exposure": st.none() | st.floats(1, 30),
        }
    )


components_strategy = st.tuples(terms_strategy(), st.booleans(), terms_strategy(), st.booleans()).map(
    lambda v: [
        Component(license="lic_a", terms=v[0], version="dsv_a", epsilon_cap=v[1]),
        Component(license="lic_b", terms=v[2], version="dsv_b", epsilon_cap=v[3]),
    ]
)
requests_strategy = st.builds(
    MixRequest,
    template=st.sampled_from(TEMPLATES),
    purpose=st.sampled_from(PURPOSES),
    epochs=st.integers(1, 4),
    dp=st.booleans(),
    weights_leave=st.booleans(),
)


class TestTheRule:
    @settings(max_examples=400, deadline=None)
    @given(components=components_strategy, request=requests_strategy)
    def test_a_mix_is_admitted_iff_every_license_allows_it(self, components, request):
        combined = combine(components, request)
        verdicts = [allows(c, request) for c in components]
        assert combined.admitted == all(all(v.values()) for v in verdicts)
        # Every error names a license that refuses, and every refusing license is named.
        refusing = {i for i, v in enumerate(verdicts) if not all(v.values())}
        assert {int(e["pointer"].split("/")[2]) for e in combined.errors} == refusing
        for error in combined.errors:
            index = int(error["pointer"].split("/")[2])
            assert error["license"] == components[index].license
            assert error["pointer"] == f"/licenses/{index}/terms/{error['term']}"
        # One error per refused term of each license (dp's term is named dp_required or epsilon_cap).
        named = {(int(e["pointer"].split("/")[2]), e["term"]) for e in combined.errors}
        for index, verdict in enumerate(verdicts):
            for term, ok in verdict.items():
                if term == "dp":
                    assert ok == all(t not in ("dp_required", "epsilon_cap") for i, t in named if i == index)
                else:
                    assert ok == ((index, term) not in named)

    @settings(max_examples=200, deadline=None)
    @given(components=components_strategy, request=requests_strategy)
    def test_the_combined_terms_are_intersection_all_any_minimum_and_union(self, components, request):
        combined = combine(components, request)
        a, b = (c.terms for c in components)
        assert combined.weights_may_leave == (a["weights_may_leave"] and b["weights_may_leave"])
        assert combined.dp_required == any(
            t["dp_required"] or c.epsilon_cap for t, c in zip((a, b), components, strict=True)
        )
        caps = [t["max_epochs"] for t in (a, b) if t["max_epochs"] is not None]
        assert combined.max_epochs == (min(caps) if caps else None)
        assert combined.attribution == list(
            dict.fromkeys(t["attribution"] for t in (a, b) if t["attribution"])
        )
        expected = [p for p in (a["purposes"] or b["purposes"]) if (not b["purposes"] or p in b["purposes"])]
        if a["purposes"] and b["purposes"]:
            expected = [p for p in a["purposes"] if p in b["purposes"]]
        assert combined.purposes == expected
        gates = [t["gate_max_exposure"] for t in (a, b) if t["gate_max_exposure"] is not None]
        assert combined.gate_max_exposure == (min(gates) if gates else None)

    def test_one_version_is_not_mixed_with_itself(self):
        same = [Component("lic_a", {}, "dsv_x"), Component("lic_b", {}, "dsv_x")]
        combined = combine(same, MixRequest(template="causal_lm"))
        assert [e["pointer"] for e in combined.errors] == ["/licenses/1/terms/version"]

    @given(st.lists(st.integers(1, 1000), min_size=2, max_size=8))
    def test_weights_become_basis_points_that_add_up(self, weights):
        bps = weights_bps([Decimal(w) for w in weights])
        assert sum(bps) == 10_000 and all(b > 0 for b in bps)
        total = sum(weights)
        assert all(abs(b - 10_000 * w / total) < 1 for b, w in zip(bps, weights, strict=True))

    @given(st.lists(st.integers(0, 10**6), min_size=2, max_size=4), st.data())
    def test_planned_tokens_keep_the_proportions_without_repeating_a_record(self, tokens, data):
        bps = weights_bps([Decimal(data.draw(st.integers(1, 100))) for _ in tokens])
        planned = planned_tokens(tokens, bps)
        assert all(p <= t for p, t in zip(planned, tokens, strict=True))
        if all(tokens):
            # The version that bounds the mix gives (nearly) all it has; each share within one token.
            total = sum(planned)
            assert any(t - p <= 1 for p, t in zip(planned, tokens, strict=True))
            assert all(abs(p - total * b / 10_000) <= len(tokens) for p, b in zip(planned, bps, strict=True))


# --- the rule through the service, against single-license submits ---------------------------------


@pytest.fixture
def tiny() -> BaseModel:
    return BaseModel.objects.get(name="gpt2-tiny", owner=None)


def _admitted(submit: Any) -> bool:
    """Whether a submit is admitted; nothing it stored survives (a savepoint rolled back)."""
    try:
        with transaction.atomic():
            submit()
            raise _Rollback
    except _Rollback:
        return True
    except (Invalid, Conflict):
        return False


class _Rollback(Exception):
    pass


service_terms = st.fixed_dictionaries(
    {
        "purposes": st.sampled_from([["research"], ["research", "commercial"], ["commercial"]]),
        "job_templates": st.sampled_from(
            [["causal_lm_lora"], ["causal_lm", "causal_lm_lora"], ["causal_lm"]]
        ),
        "max_epochs": st.integers(1, 3),
        "dp_required": st.booleans(),
        "weights_may_leave": st.booleans(),
        "max_jobs": st.integers(1, 3),
        "max_tokens": st.sampled_from([1_500, 1_000_000, 1_000_000]),
    }
)


def test_through_the_service_a_mix_is_admitted_iff_each_license_alone_admits_the_request(
    sealed_rows,  # noqa: F811
    bob,
    bolt,
    tiny,
):
    """The same request, submitted under each license alone and under both mixed 50/50."""
    outcomes: list[bool] = []

    @settings(max_examples=60, deadline=None)
    @given(
        pair=st.tuples(service_terms, st.booleans(), service_terms, st.booleans()),
        template=st.sampled_from(["causal_lm_lora", "causal_lm_lora", "causal_lm"]),
        purpose=st.sampled_from(["research", "research", "commercial"]),
        epochs=st.integers(1, 2),
        dp=st.booleans(),
    )
    def check(pair, template, purpose, epochs, dp):
        with transaction.atomic():
            grants = []
            for terms, capped in ((pair[0], pair[1]), (pair[2], pair[3])):
                version = sealed_rows(epsilon_cap="9" if capped else None)
                grants.append(grant_for_test(version, bolt, **terms))
            request = JobRequest(
                template=template,
                base=tiny,
                hyperparameters={**TINY_HP, "epochs": epochs},
                dp={"enabled": True, "target_epsilon": 1.0} if dp else None,
                purpose=purpose,
            )
            alone = [
                _admitted(lambda g=g: job_submit(actor=bob, organisation=bolt, grant=g, request=request))
                for g in grants
            ]
            mixed = _admitted(
                lambda: job_submit_mixed(
                    actor=bob,
                    organisation=bolt,
                    parts=[MixPart(grants[0], Decimal(1)), MixPart(grants[1], Decimal(1))],
                    request=request,
                )
            )
            assert mixed == all(alone), (alone, pair, template, purpose, epochs, dp)
            outcomes.append(mixed)
            transaction.set_rollback(True)

    check()
    # Both sides of the "iff" were exercised.
    assert True in outcomes and False in outcomes, outcomes


# --- through the API ------------------------------------------------------------------------------


@pytest.fixture
def bob_api(token_for, bob, bolt):
    return token_for(bob, bolt, ["read", "train"])


def _terms(**changes: Any) -> dict[str, Any]:
    return {
        "purposes": ["research"],
        "job_templates": ["causal_lm", "causal_lm_lora"],
        "max_jobs": 3,
        "max_tokens": 1_000_000,
        "max_epochs": 3,
        "weights_may_leave": True,
        "gate_max_exposure": 20.0,
        "attribution": "Acme support tickets",
        **changes,
    }


def _mixed_body(grants: list[Grant], weights: list[Any], tiny: BaseModel, **changes: Any) -> dict[str, Any]:
    return {
        "licenses": [{"license": g.external_ref, "weight": w} for g, w in zip(grants, weights, strict=True)],
        "template": "causal_lm_lora",
        "base": tiny.public_id,
        "hyperparameters": dict(TINY_HP),
        **changes,
    }


@pytest.fixture
def two_versions(sealed_rows, acme) -> list[DatasetVersion]:  # noqa: F811
    return [sealed_rows(tokens={acme: 7_000}), sealed_rows(tokens={acme: 5_000})]


class TestNamedConflicts:
    def test_research_only_with_commercial_is_refused_pointing_at_both_licenses_purposes(
        self, bob_api, bolt, two_versions, tiny
    ):
        research = grant_for_test(two_versions[0], bolt, **_terms(purposes=["research"]))
        commercial = grant_for_test(two_versions[1], bolt, **_terms(purposes=["commercial"]))
        body = _mixed_body([research, commercial], ["0.7", "0.3"], tiny)
        problem = assert_problem(
            bob_api.post(URL, body, format="json"), 422, "training.licenses_incompatible"
        )
        assert [(e["pointer"], e["license"], e["code"]) for e in problem["errors"]] == [
            ("/licenses/0/terms/purposes", research.external_ref, "no_common_purpose"),
            ("/licenses/1/terms/purposes", commercial.external_ref, "no_common_purpose"),
        ]
        assert_nothing_stored()
        # Asking for research names only the license that does not permit it.
        problem = assert_problem(
            bob_api.post(URL, {**body, "purpose": "research"}, format="json"),
            422,
            "training.licenses_incompatible",
        )
        assert [e["pointer"] for e in problem["errors"]] == ["/licenses/1/terms/purposes"]
        assert (
            "commercial" in problem["errors"][0]["detail"] and "'research'" in problem["errors"][0]["detail"]
        )
        assert_nothing_stored()

    def test_weights_stay_with_weights_leave_is_refused_pointing_at_the_license_that_keeps_them(
        self, bob_api, bolt, two_versions, tiny
    ):
        leave = grant_for_test(two_versions[0], bolt, **_terms(weights_may_leave=True))
        stay = grant_for_test(two_versions[1], bolt, **_terms(weights_may_leave=False))
        body = _mixed_body([leave, stay], [70, 30], tiny, weights_leave=True)
        problem = assert_problem(
            bob_api.post(URL, body, format="json"), 422, "training.licenses_incompatible"
        )
        assert [(e["pointer"], e["license"], e["code"]) for e in problem["errors"]] == [
            ("/licenses/1/terms/weights_may_leave", stay.external_ref, "weights_stay"),
        ]
        assert_nothing_stored()
        # Not asking for a download: admitted; the weights stay in custody (every license must let them go).
        response = bob_api.post(URL, {**body, "weights_leave": False}, format="json")
        assert response.status_code == 202, response.content
        job = TrainingJob.objects.get()
        assert job.request["mix"]["weights_may_leave"] is False

    def test_every_conflicting_term_of_every_license_is_named(self, bob_api, bolt, two_versions, tiny):
        a = grant_for_test(two_versions[0], bolt, **_terms(max_epochs=1, job_templates=["causal_lm"]))
        b = grant_for_test(two_versions[1], bolt, **_terms(purposes=["commercial"], dp_required=True))
        body = _mixed_body([a, b], [1, 1], tiny, purpose="research", hyperparameters={**TINY_HP, "epochs": 2})
        problem = assert_problem(
            bob_api.post(URL, body, format="json"), 422, "training.licenses_incompatible"
        )
        assert sorted(e["pointer"] for e in problem["errors"]) == [
            "/licenses/0/terms/job_templates",
            "/licenses/0/terms/max_epochs",
            "/licenses/1/terms/dp_required",
            "/licenses/1/terms/purposes",
        ]
        assert_nothing_stored()

    def test_a_license_named_twice_or_not_held_is_refused_with_a_pointer(
        self, bob_api, bolt, two_versions, tiny
    ):
        a = grant_for_test(two_versions[0], bolt, **_terms())
        twice = _mixed_body([a, a], [1, 1], tiny)
        assert_problem(
            bob_api.post(URL, twice, format="json"), 422, "training.licenses_invalid", "/licenses/1/license"
        )
        unknown = _mixed_body([a, a], [1, 1], tiny)
        unknown["licenses"][1]["license"] = "lic_0000000000000000"
        assert_problem(
            bob_api.post(URL, unknown, format="json"),
            404,
            "training.license_not_found",
            "/licenses/1/license",
        )
        both = {**_mixed_body([a, a], [1, 1], tiny), "license": a.external_ref}
        assert_problem(bob_api.post(URL, both, format="json"), 422, "training.license_required", "/licenses")
        bad_weight = _mixed_body([a, a], [1, -1], tiny)
        response = bob_api.post(URL, bad_weight, format="json")
        assert response.status_code in (400, 422)
        assert "/licenses/1/weight" in [e["pointer"] for e in response.json()["errors"]]
        assert_nothing_stored()


class TestAdmission:
    def test_a_70_30_job_reserves_a_slot_the_tokens_and_each_versions_epsilon_on_each_license(
        self,
        bob_api,
        bolt,
        sealed_rows,  # noqa: F811
        acme,
        tiny,
    ):
        first = sealed_rows(tokens={acme: 7_000})
        capped = sealed_rows(tokens={acme: 5_000}, epsilon_cap="4")
        a = grant_for_test(first, bolt, **_terms())
        b = grant_for_test(capped, bolt, **_terms(attribution="Cora Texts"))
        body = _mixed_body([a, b], [70, 30], tiny)
        # The capped version makes DP required for the whole mix, pointing at its license.
        problem = assert_problem(
            bob_api.post(URL, body, format="json"), 422, "training.licenses_incompatible"
        )
        assert [e["pointer"] for e in problem["errors"]] == ["/licenses/1/terms/epsilon_cap"]
        assert_nothing_stored()

        response = bob_api.post(URL, {**body, "dp": {"enabled": True, "target_epsilon": 1.5}}, format="json")
        assert response.status_code == 202, response.content
        job = TrainingJob.objects.get()
        listed = response.json()["licenses"]
        assert [(x["license"], x["grant_id"], x["weight_bps"]) for x in listed] == [
            (a.external_ref, a.public_id, 7000),
            (b.external_ref, b.public_id, 3000),
        ]
        # 7,000 and 5,000 tokens at 70/30: the first version bounds the mix (7,000 + 3,000).
        epochs = job.epochs
        assert [x["tokens_planned"] for x in listed] == [7_000 * epochs, 3_000 * epochs]
        assert job.tokens_planned == 10_000 * epochs
        # One job slot on each license; each version's budget charged the job's epsilon once.
        assert sorted(
            GrantJob.objects.filter(consumer_ref=job.consumer_ref).values_list("grant_id", flat=True)
        ) == [
            a.pk,
            b.pk,
        ]
        entries = PrivacyBudgetEntry.objects.filter(consumer_ref=job.consumer_ref)
        assert sorted((e.version_id, e.epsilon) for e in entries) == [
            (first.pk, Decimal("1.500")),
            (capped.pk, Decimal("1.500")),
        ]
        assert job.request["mix"]["attribution"] == ["Acme support tickets", "Cora Texts"]
        # The job's list shows the same licenses.
        assert bob_api.get(URL).json()["results"][0]["licenses"] == listed

    def test_each_license_bounds_the_tokens_read_from_its_own_version(
        self, bob_api, bolt, two_versions, tiny
    ):
        a = grant_for_test(two_versions[0], bolt, **_terms())
        # 3,000 tokens a epoch come from the second version at 70/30; its license allows 2,000.
        b = grant_for_test(two_versions[1], bolt, **_terms(max_tokens=2_000))
        body = _mixed_body([a, b], [70, 30], tiny, hyperparameters={**TINY_HP, "epochs": 1})
        problem = assert_problem(bob_api.post(URL, body, format="json"), 422, "training.tokens_exceeded")
        assert [(e["pointer"], e["license"]) for e in problem["errors"]] == [
            ("/licenses/1/terms/max_tokens", b.external_ref)
        ]
        assert_nothing_stored()

    def test_a_cancelled_mix_gives_back_every_slot_and_every_versions_epsilon(
        self,
        bob,
        bolt,
        sealed_rows,  # noqa: F811
        acme,
        tiny,
    ):
        from training.services import job_cancel

        versions = [sealed_rows(tokens={acme: 1_000}, epsilon_cap="5"), sealed_rows(tokens={acme: 1_000})]
        grants = [grant_for_test(v, bolt, **_terms()) for v in versions]
        job = job_submit_mixed(
            actor=bob,
            organisation=bolt,
            parts=[MixPart(g, Decimal(1)) for g in grants],
            request=JobRequest(
                template="causal_lm_lora",
                base=tiny,
                hyperparameters=dict(TINY_HP),
                dp={"enabled": True, "target_epsilon": 1.0},
            ),
        )
        job_cancel(actor=bob, job=job)
        assert not GrantJob.objects.filter(consumer_ref=job.consumer_ref).exists()
        assert [g.jobs_reserved for g in Grant.objects.filter(pk__in=[g.pk for g in grants])] == [0, 0]
        states = PrivacyBudgetEntry.objects.filter(consumer_ref=job.consumer_ref).values_list(
            "state", flat=True
        )
        assert sorted(states) == ["released", "released"]
        assert JobGrant.objects.filter(job=job).count() == 2
