"""Submitting distillation jobs: the distill block, the teacher, the terms, each refusal with a pointer."""

from __future__ import annotations

from typing import Any

import pytest

from tests.grants import grant_for_test
from tests.training.conftest import TINY_HP, job_body
from tests.training.test_submit import assert_nothing_stored, assert_problem, post
from training.models import BaseModel, JobState, TrainingJob

DISTILL_TERMS = ["causal_lm", "distill_causal_lm", "distill_classification", "seq_classification"]


@pytest.fixture
def bob_api(token_for, bob, bolt):
    return token_for(bob, bolt, ["read", "train"])


@pytest.fixture
def distill_grant(sealed_version, bolt, license_terms):
    return grant_for_test(sealed_version, bolt, **{**license_terms, "job_templates": DISTILL_TERMS})


def builtin(name: str) -> BaseModel:
    return BaseModel.objects.get(name=name, owner=None)


def body(grant, **overrides: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "template": "distill_causal_lm",
        "distill": {"teacher": builtin("gpt2-124m").public_id, "alpha": 0.5, "temperature": 2.0},
    }
    fields.update(overrides)
    return job_body(grant, builtin("gpt2-tiny"), **fields)


class TestDistillSubmit:
    def test_queues_a_student_with_its_teacher_in_the_spec_and_request(self, bob_api, distill_grant):
        response = post(bob_api, body(distill_grant))
        assert response.status_code == 202, response.content
        job = TrainingJob.objects.get()
        assert job.state == JobState.QUEUED
        assert job.template == "distill_causal_lm"
        assert job.base.name == "gpt2-tiny"
        assert job.spec["teacher"] == {"kind": "builtin", "name": "gpt2-124m"}
        assert job.spec["distill"] == {"alpha": 0.5, "temperature": 2.0}
        resolved = job.request["distill"]["resolved"]
        assert resolved["kind"] == "builtin" and resolved["ref"] == builtin("gpt2-124m").public_id

    def test_defaults_alpha_and_temperature(self, bob_api, distill_grant):
        teacher = builtin("gpt2-124m").public_id
        response = post(bob_api, body(distill_grant, distill={"teacher": teacher}))
        assert response.status_code == 202, response.content
        assert TrainingJob.objects.get().spec["distill"] == {"alpha": 0.5, "temperature": 2.0}

    @pytest.mark.parametrize(
        ("distill", "code", "pointer"),
        [
            (None, "training.distill_invalid", "/distill"),
            ({"alpha": 0.5}, "training.distill_invalid", "/distill/teacher"),
            ({"teacher": "gpt2-124m"}, "training.distill_invalid", "/distill/teacher"),
            ({"teacher": "TEACHER", "alpha": 1.5}, "training.spec_invalid", "/distill/alpha"),
            ({"teacher": "TEACHER", "temperature": 0}, "training.spec_invalid", "/distill/temperature"),
            ({"teacher": "TEACHER", "temperature": "hot"}, "training.spec_invalid", "/distill/temperature"),
            ({"teacher": "TEACHER", "beta": 1}, "training.distill_invalid", "/distill/beta"),
            ({"teacher": "base_00000000000000000000"}, "training.teacher_not_found", "/distill/teacher"),
            ({"teacher": "MINILM"}, "training.teacher_invalid", "/distill/teacher"),
        ],
    )
    def test_a_bad_distill_block_points_at_its_field(self, bob_api, distill_grant, distill, code, pointer):
        if isinstance(distill, dict) and distill.get("teacher") == "TEACHER":
            distill = {**distill, "teacher": builtin("gpt2-124m").public_id}
        if isinstance(distill, dict) and distill.get("teacher") == "MINILM":
            distill = {**distill, "teacher": builtin("minilm-l6").public_id}
        status = 404 if code == "training.teacher_not_found" else 422
        assert_problem(post(bob_api, body(distill_grant, distill=distill)), status, code, pointer)
        assert_nothing_stored()

    def test_a_distill_block_on_another_template_is_refused(self, bob_api, distill_grant):
        response = post(bob_api, body(distill_grant, template="causal_lm"))
        assert_problem(response, 422, "training.distill_invalid", "/distill")
        assert_nothing_stored()

    def test_a_student_larger_than_its_teacher_is_refused(self, bob_api, distill_grant):
        response = post(
            bob_api,
            job_body(
                distill_grant,
                builtin("gpt2-124m"),
                template="distill_causal_lm",
                distill={"teacher": builtin("gpt2-tiny").public_id},
            ),
        )
        assert_problem(response, 422, "training.distill_invalid", "/base")
        assert_nothing_stored()

    def test_a_license_that_does_not_name_the_template_refuses_it(
        self, bob_api, sealed_version, bolt, license_terms
    ):
        grant = grant_for_test(sealed_version, bolt, **{**license_terms, "job_templates": ["causal_lm"]})
        assert_problem(post(bob_api, body(grant)), 422, "training.template_not_permitted", "/template")
        assert_nothing_stored()

    def test_a_license_naming_no_templates_does_not_allow_distillation(
        self, bob_api, sealed_version, bolt, license_terms
    ):
        grant = grant_for_test(sealed_version, bolt, **{**license_terms, "job_templates": []})
        # Positive control: the same license runs a plain template.
        ok = post(bob_api, job_body(grant, builtin("gpt2-tiny")))
        assert ok.status_code == 202, ok.content
        response = post(bob_api, body(grant))
        body_ = assert_problem(response, 422, "training.template_not_permitted", "/template")
        assert "/terms/permission/job_templates" in body_["detail"]

    def test_dp_is_refused_for_the_causal_student(self, bob_api, distill_grant):
        response = post(bob_api, body(distill_grant, dp={"enabled": True, "target_epsilon": 4.0}))
        assert_problem(response, 422, "training.spec_invalid", "/dp/enabled")
        assert_nothing_stored()

    def test_a_classification_student_takes_dp_and_a_label_field(self, bob_api, distill_grant):
        minilm = builtin("minilm-l6")
        response = post(
            bob_api,
            job_body(
                distill_grant,
                minilm,
                template="distill_classification",
                label_field="label",
                dp={"enabled": True, "target_epsilon": 4.0},
                distill={"teacher": minilm.public_id, "alpha": 0.7, "temperature": 3.0},
                hyperparameters={**TINY_HP, "learning_rate": 5e-5},
            ),
        )
        assert response.status_code == 202, response.content
        job = TrainingJob.objects.get()
        assert job.dp_enabled
        assert job.spec["teacher"] == {"kind": "builtin", "name": "all-minilm-l6-v2"}

    def test_a_custody_model_teacher_whose_license_does_not_allow_distillation_is_refused(
        self, bob_api, distill_grant, sealed_version, bolt, license_terms, bob
    ):
        # A succeeded job whose weights stay in custody, trained under a license naming causal_lm only.
        governing = grant_for_test(
            sealed_version,
            bolt,
            **{**license_terms, "job_templates": ["causal_lm"], "weights_may_leave": False},
        )
        teacher = TrainingJob.objects.create(
            organisation=bolt,
            submitted_by=bob,
            grant=governing,
            template="causal_lm",
            base=builtin("gpt2-tiny"),
            state=JobState.SUCCEEDED,
            artifact_encrypted=True,
            artifact_blob_key="custody/artifacts/teacher",
        )
        response = post(bob_api, body(distill_grant, distill={"teacher": teacher.public_id}))
        problem = assert_problem(
            response, 422, "training.custody_model_use_not_permitted", "/terms/permission/job_templates"
        )
        assert "distill_causal_lm" in problem["detail"]
        assert TrainingJob.objects.count() == 1  # the teacher only: nothing of the student stored
