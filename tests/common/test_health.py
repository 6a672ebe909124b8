"""``/healthz``: every component checked for real; a broken one answers 503 and is named."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from django.test import Client

from config.celery import app as celery_app

CHECKS = {"database", "broker", "blob_store", "key_provider"}


@contextmanager
def broker_conf(*, broker_url: str, broker_transport_options: dict) -> Iterator[None]:
    """Point this process's Celery app elsewhere for the block (the health check reads the conf).

    Celery prefers the CELERY_BROKER_URL environment variable to its
    configuration, so that changes too.
    """
    saved = celery_app.conf.broker_url, celery_app.conf.broker_transport_options
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CELERY_BROKER_URL", broker_url)
        celery_app.conf.update(broker_url=broker_url, broker_transport_options=broker_transport_options)
        try:
            yield
        finally:
            celery_app.conf.update(broker_url=saved[0], broker_transport_options=saved[1])


def a_regular_file(tmp_path: Path) -> Path:
    path = tmp_path / "not-a-directory"
    path.write_text("a file where a directory should be")
    return path


def health(client: Client) -> tuple[int, dict]:
    response = client.get("/healthz")
    assert response["Content-Type"] == "application/json"
    return response.status_code, response.json()


@pytest.mark.django_db
class TestHealthz:
    def test_all_components_ok_answers_200_with_each_check(self, client):
        status, body = health(client)
        assert status == 200, body
        assert body["status"] == "ok"
        assert set(body["checks"]) == CHECKS
        assert all(check["status"] == "ok" for check in body["checks"].values())

    def test_is_never_cached(self, client):
        assert "no-cache" in client.get("/healthz")["Cache-Control"]

    def test_an_unusable_blob_directory_answers_503_naming_the_blob_store(self, client, settings, tmp_path):
        settings.BLOB_DIR = a_regular_file(tmp_path) / "blobs"
        status, body = health(client)
        assert status == 503
        assert body["status"] == "error"
        assert body["checks"]["blob_store"]["status"] == "error"
        assert "NotADirectoryError" in body["checks"]["blob_store"]["error"]
        assert body["checks"]["database"]["status"] == "ok"

    def test_an_unusable_key_directory_answers_503_naming_the_key_provider(self, client, settings, tmp_path):
        settings.KEY_DIR = a_regular_file(tmp_path) / "keys"
        status, body = health(client)
        assert status == 503
        assert body["checks"]["key_provider"]["status"] == "error"
        assert body["checks"]["blob_store"]["status"] == "ok"

    def test_an_unreachable_broker_answers_503_naming_the_broker(self, client):
        # Port 1 on loopback: nothing listens, the connection is refused at once.
        with broker_conf(broker_url="redis://127.0.0.1:1/0", broker_transport_options={}):
            status, body = health(client)
        assert status == 503
        assert body["checks"]["broker"]["status"] == "error"
        assert body["checks"]["database"]["status"] == "ok"

    def test_an_unwritable_filesystem_broker_answers_503_naming_the_broker(self, client, tmp_path):
        missing = str(a_regular_file(tmp_path) / "out")
        with broker_conf(
            broker_url="filesystem://",
            broker_transport_options={"data_folder_in": missing, "data_folder_out": missing},
        ):
            status, body = health(client)
        assert status == 503
        assert body["checks"]["broker"]["status"] == "error"
        assert "missing" in body["checks"]["broker"]["error"]

    def test_the_filesystem_broker_passes_when_its_folders_are_writable(self, client, tmp_path):
        folder = tmp_path / "broker"
        folder.mkdir()
        with broker_conf(
            broker_url="filesystem://",
            broker_transport_options={"data_folder_in": str(folder), "data_folder_out": str(folder)},
        ):
            status, body = health(client)
        assert status == 200, body
        assert list(folder.iterdir()) == []  # the probe cleaned up after itself
