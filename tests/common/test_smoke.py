import pytest


@pytest.mark.django_db
def test_me_answers_the_caller_with_organisations(alice, acme, token_for):
    client = token_for(alice, acme, ["read"])
    response = client.get("/api/v1/me")
    assert response.status_code == 200
    body = response.json()
    assert body["username"] == "alice"
    assert body["memberships"] == [
        {
            "organisation": {
                "id": acme.public_id,
                "name": "Acme Corpora",
                "slug": "acme-corpora",
                "is_provider": True,
                "is_trainer": False,
            },
            "role": "admin",
        }
    ]
    assert body["token_scopes"] == ["read"]
