"""The error contract: every status answers application/problem+json with a stable code."""

from __future__ import annotations

import logging

import pytest
from rest_framework.test import APIClient

from common.api.throttling import TokenRateThrottle

PROBLEM_KEYS = {"type", "title", "status", "detail", "code", "errors"}


def assert_problem(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.content
    assert response["Content-Type"] == "application/problem+json"
    body = response.json()
    assert set(body) == PROBLEM_KEYS
    assert body["status"] == status
    assert body["code"] == code
    assert body["type"].endswith(code)
    assert body["detail"]
    assert "Traceback" not in response.content.decode()
    return body


@pytest.fixture
def admin_client(alice, acme, token_for) -> APIClient:
    return token_for(alice, acme, ["read", "admin"])


class TestProblemJson:
    def test_400_for_malformed_json_names_the_position(self, admin_client):
        response = admin_client.post("/api/v1/tokens", data='{"name": "x",', content_type="application/json")
        body = assert_problem(response, 400, "malformed_request")
        assert "line 1" in body["detail"]

    def test_400_for_nan_which_is_not_json(self, admin_client):
        response = admin_client.post("/api/v1/tokens", data='{"name": NaN}', content_type="application/json")
        assert_problem(response, 400, "malformed_request")

    def test_401_without_credentials_with_www_authenticate(self, api):
        response = api.get("/api/v1/me")
        assert_problem(response, 401, "not_authenticated")
        assert response["WWW-Authenticate"].startswith("Bearer")

    def test_401_for_a_token_that_is_not_ours(self, api):
        api.credentials(HTTP_AUTHORIZATION="Bearer ghp_not_a_sealroom_token")
        assert_problem(api.get("/api/v1/me"), 401, "common.token_malformed")

    def test_403_for_the_wrong_role(self, acme, acme_member, alice, token_for):
        client = token_for(acme_member, acme, ["read", "admin"])
        response = client.post(
            f"/api/v1/organisations/{acme.public_id}/invitations",
            {"email": "new@example.test", "role": "viewer"},
            format="json",
        )
        assert_problem(response, 403, "common.role_insufficient")

    def test_404_for_another_organisations_object(self, bob, bolt, acme, alice):
        client = APIClient()
        client.force_authenticate(bob)
        assert_problem(
            client.get(f"/api/v1/organisations/{acme.public_id}/members"),
            404,
            "common.organisation_not_found",
        )

    def test_404_for_an_unrouted_api_path(self, admin_client):
        assert_problem(admin_client.get("/api/v1/no-such-thing"), 404, "not_found")

    def test_405_for_a_method_the_endpoint_lacks(self, admin_client):
        assert_problem(admin_client.put("/api/v1/me", {}, format="json"), 405, "method_not_allowed")

    def test_409_when_inviting_an_existing_member(self, admin_client, acme, acme_member):
        response = admin_client.post(
            f"/api/v1/organisations/{acme.public_id}/invitations",
            {"email": acme_member.email, "role": "viewer"},
            format="json",
        )
        assert_problem(response, 409, "common.already_member")

    def test_413_for_an_oversized_json_body(self, admin_client, settings):
        settings.API_MAX_JSON_BYTES = 100
        response = admin_client.post(
            "/api/v1/tokens", data='{"name": "' + "x" * 200 + '"}', content_type="application/json"
        )
        assert_problem(response, 413, "common.body_too_large")

    def test_413_for_a_body_past_djangos_memory_cap(self, admin_client, settings):
        # Django refuses it (RequestDataTooBig) before the parser's own limit is reached.
        settings.API_MAX_JSON_BYTES = 8 * 1024 * 1024
        settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 2621440
        body = '{"name": "' + "x" * (3 * 1024 * 1024) + '"}'
        response = admin_client.post("/api/v1/tokens", data=body, content_type="application/json")
        assert_problem(response, 413, "common.body_too_large")

    def test_the_default_settings_answer_413_up_to_and_past_the_memory_cap(self, admin_client):
        for size in (1024 * 1024 + 10, 3 * 1024 * 1024):
            body = '{"name": "' + "x" * size + '"}'
            response = admin_client.post("/api/v1/tokens", data=body, content_type="application/json")
            assert_problem(response, 413, "common.body_too_large")

    def test_415_for_an_unsupported_media_type(self, admin_client):
        response = admin_client.post("/api/v1/tokens", data="name=x", content_type="text/plain")
        assert_problem(response, 415, "unsupported_media_type")

    def test_422_with_pointers_for_each_invalid_field(self, admin_client):
        response = admin_client.post(
            "/api/v1/tokens",
            {"name": "", "organisation_id": "abc", "scopes": ["read", "fly"]},
            format="json",
        )
        body = assert_problem(response, 422, "validation_error")
        pointers = {e["pointer"]: e["code"] for e in body["errors"]}
        assert pointers == {
            "/name": "blank",
            "/organisation_id": "invalid_public_id",
            "/scopes/1": "invalid_choice",
        }
        assert " at /" in body["detail"]

    def test_422_from_a_domain_rule_keeps_its_code_and_pointer(self, admin_client, acme):
        response = admin_client.post(
            "/api/v1/tokens",
            {"name": "t", "organisation_id": acme.public_id, "scopes": ["read"], "expires_in_days": 9999},
            format="json",
        )
        body = assert_problem(response, 422, "common.token_invalid")
        assert body["errors"] == [
            {
                "pointer": "/expires_in_days",
                "code": "out_of_range",
                "detail": "Expiry must be between 1 and 365 days.",
            }
        ]

    def test_422_when_the_body_is_not_an_object(self, admin_client):
        response = admin_client.post("/api/v1/tokens", data="[1, 2]", content_type="application/json")
        body = assert_problem(response, 422, "validation_error")
        assert body["errors"][0]["pointer"] == "/"

    def test_429_with_retry_after_when_a_token_exceeds_its_rate(self, admin_client, monkeypatch):
        monkeypatch.setattr(TokenRateThrottle, "THROTTLE_RATES", {"token": "3/min"})
        statuses = [admin_client.get("/api/v1/me").status_code for _ in range(3)]
        assert statuses == [200, 200, 200]
        response = admin_client.get("/api/v1/me")
        assert_problem(response, 429, "rate_limited")
        assert int(response["Retry-After"]) >= 1

    def test_throttling_counts_each_token_separately(self, alice, acme, token_for, monkeypatch):
        monkeypatch.setattr(TokenRateThrottle, "THROTTLE_RATES", {"token": "2/min"})
        first, second = token_for(alice, acme, ["read"]), token_for(alice, acme, ["read"])
        assert [first.get("/api/v1/me").status_code for _ in range(3)] == [200, 200, 429]
        assert second.get("/api/v1/me").status_code == 200


def nested(depth: int, inner: str = "1") -> str:
    return "[" * depth + inner + "]" * depth


class TestJsonNesting:
    @pytest.mark.parametrize(
        "path", ["/api/v1/tokens", "/api/v1/datasets", "/api/v1/organisations/{}/webhooks"]
    )
    def test_a_thousand_levels_in_two_kilobytes_is_a_400(self, alice, acme, token_for, path):
        client = token_for(alice, acme, ["read", "provide", "order", "train", "admin"])
        body = nested(1000)
        assert len(body) < 2100
        response = client.post(path.format(acme.public_id), data=body, content_type="application/json")
        problem = assert_problem(response, 400, "common.json_too_deep")
        assert "64" in problem["detail"]

    def test_objects_count_as_levels_too(self, admin_client):
        body = '{"a": ' * 65 + "1" + "}" * 65
        response = admin_client.post("/api/v1/tokens", data=body, content_type="application/json")
        assert_problem(response, 400, "common.json_too_deep")

    def test_the_limit_is_a_setting_and_inclusive(self, admin_client, settings):
        settings.API_MAX_JSON_DEPTH = 8
        ok = '{"name": ' + nested(7, '"x"') + "}"
        response = admin_client.post("/api/v1/tokens", data=ok, content_type="application/json")
        assert_problem(response, 422, "validation_error")  # parsed: only the field is wrong
        deep = '{"name": ' + nested(8, '"x"') + "}"
        response = admin_client.post("/api/v1/tokens", data=deep, content_type="application/json")
        assert_problem(response, 400, "common.json_too_deep")

    def test_brackets_inside_strings_do_not_count(self, admin_client, acme):
        name = "[{" * 35 + '\\"]'
        body = '{"name": "' + name + f'", "organisation_id": "{acme.public_id}", "scopes": ["read"]}}'
        response = admin_client.post("/api/v1/tokens", data=body, content_type="application/json")
        assert response.status_code == 201, response.content
        assert response.json()["name"] == "[{" * 35 + '"]'


class TestRefusedPages:
    def test_a_form_post_past_the_memory_cap_is_a_413_page(self, client, alice):
        client.force_login(alice)
        response = client.post("/tokens/", {"name": "x" * (3 * 1024 * 1024)})
        assert response.status_code == 413
        assert b"Too large" in response.content and b"Traceback" not in response.content

    def test_a_403_page_logs_one_line_without_a_traceback(self, client, acme, acme_member, caplog):
        stderr = next(h for h in logging.getLogger().handlers if h.name == "stderr")
        client.force_login(acme_member)
        with caplog.at_level(logging.WARNING):
            response = client.post(
                f"/organisations/{acme.public_id}/invitations/", {"email": "x@example.test"}
            )
        assert response.status_code == 403
        records = [r for r in caplog.records if r.name == "django.request"]
        assert len(records) == 1
        written = [stderr.format(r) for r in records if stderr.filter(r)]
        assert len(written) == 1
        assert "\n" not in written[0] and "Traceback" not in written[0]
        assert "Forbidden" in written[0] and "Only admins" in written[0]


class TestSchemaDeclaresErrors:
    def test_every_operation_declares_problem_responses(self, api, db):
        response = api.get("/api/v1/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
        assert response.status_code == 200
        schema = response.json()
        assert "Problem" in schema["components"]["schemas"]
        operations = [
            (path, method, op) for path, item in schema["paths"].items() for method, op in item.items()
        ]
        assert operations
        for path, method, op in operations:
            declared = set(op["responses"])
            assert {"400", "401", "403", "404", "429"} <= declared, (path, method)
            if method in ("post", "patch", "put"):
                assert {"415", "422"} <= declared, (path, method)
            problem = op["responses"]["401"]["content"]
            assert list(problem) == ["application/problem+json"], (path, method)
