"""Key management: master rotation and rewrap, data-key rotation, the two-step crypto-shred."""

from __future__ import annotations

from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone
from rest_framework.test import APIClient

from common.models import AuditEvent
from custody import services
from custody.exceptions import Conflict, IntegrityFailure, Invalid, KeyUnavailable, NotPermitted
from custody.keys import kek_provider
from custody.models import DatasetVersion
from custody.services.ingest import shard_records
from custody.services.keys_admin import shred_delay
from tests.custody.conftest import jsonl
from tests.factories import MembershipFactory
from tests.grants import grant_for_test
from tests.helpers import login_with_otp


def stored(value: bytes | memoryview | None) -> bytes:
    """A wrapped key as the database returns it (bytes or memoryview, by backend)."""
    assert value is not None
    return bytes(value)


def stream_of(version: DatasetVersion, licensee, consumer_ref: str = "job-1"):
    grant = grant_for_test(version, licensee)
    return services.grant_stream_open(grant=grant, consumer_ref=consumer_ref, purpose="license")


def read_all(version: DatasetVersion, licensee, consumer_ref: str = "job-1") -> list[int]:
    return sorted(r["id"] for batch in stream_of(version, licensee, consumer_ref) for r in batch)


def taken_down_and_disabled(version: DatasetVersion, ops, *, waited: bool = True) -> DatasetVersion:
    """Shred step 1 on a version taken down; ``waited`` moves the disable back past the delay."""
    services.version_takedown(actor=ops, version=version, reason="provider asked to erase")
    services.version_key_disable(actor=ops, version=version, reason="provider asked to erase")
    if waited:
        DatasetVersion.objects.filter(pk=version.pk).update(
            key_disabled_at=timezone.now() - shred_delay() - timedelta(seconds=1)
        )
    return DatasetVersion.objects.select_related("dataset__owner").get(pk=version.pk)


class TestMasterKeyRotate:
    def test_old_versions_keep_decrypting_until_rewrapped_and_then_need_only_the_new_master(
        self, sealed_version, ops, bolt, settings
    ):
        provider = kek_provider()
        first = provider.master_current()
        assert services.master_key_rotate(actor=ops) == first + 1
        assert provider.kek_master(name=sealed_version.key_name) == first
        assert read_all(sealed_version, bolt, "before-rewrap") == list(range(30))

        assert services.version_rekey(actor=ops, version=sealed_version) == first + 1
        assert provider.kek_master(name=sealed_version.key_name) == first + 1
        # The old master is no longer needed: remove it and the version still opens.
        (settings.KEY_DIR / "custody" / f"master-{first}.key").unlink()
        assert read_all(sealed_version, bolt, "after-rewrap") == list(range(30))
        assert AuditEvent.objects.filter(action="custody.master_rotate").count() == 1
        rewrap = AuditEvent.objects.get(action="custody.key_rewrap")
        assert rewrap.details == {
            "key": sealed_version.key_name,
            "from_master": first,
            "to_master": first + 1,
        }
        assert rewrap.actor_id == ops.pk

    def test_a_version_whose_master_is_lost_before_the_rewrap_does_not_open(
        self, sealed_version, ops, settings
    ):
        first = kek_provider().master_current()
        services.master_key_rotate(actor=ops)
        (settings.KEY_DIR / "custody" / f"master-{first}.key").unlink()
        with pytest.raises(KeyUnavailable) as caught:
            services.version_rekey(actor=ops, version=sealed_version)
        assert caught.value.code == "custody.master_missing"

    def test_new_versions_get_their_key_under_the_new_master(self, alice, dataset, ops):
        number = services.master_key_rotate(actor=ops)
        version = services.version_create(actor=alice, dataset=dataset)
        assert kek_provider().kek_master(name=version.key_name) == number

    def test_rewrapping_a_current_key_changes_and_audits_nothing(self, sealed_version, ops):
        services.version_rekey(actor=ops, version=sealed_version)
        assert not AuditEvent.objects.filter(action="custody.key_rewrap").exists()

    def test_only_operators_rotate_or_rewrap(self, sealed_version, alice, audrey):
        for actor in (alice, audrey):
            with pytest.raises(NotPermitted):
                services.master_key_rotate(actor=actor)
            with pytest.raises(NotPermitted):
                services.version_rekey(actor=actor, version=sealed_version)


class TestKeysRotateCommand:
    def test_rotates_and_rewraps_every_live_key_printing_counts(
        self, sealed_version, alice, dataset, upload, ops
    ):
        open_version = services.version_create(actor=alice, dataset=dataset)
        upload(open_version, jsonl([{"text": "still in quarantine"}]))  # a live quarantine key
        gone = services.version_create(actor=alice, dataset=dataset)
        services.version_takedown(actor=ops, version=gone, reason="test")
        services.version_key_disable(actor=ops, version=gone, reason="test")
        DatasetVersion.objects.filter(pk=gone.pk).update(key_disabled_at=timezone.now() - timedelta(days=30))
        services.version_key_destroy(actor=ops, version=gone, confirm=services.version_label(gone))
        out = StringIO()
        call_command("keys_rotate", "--rewrap-all", stdout=out)
        text = out.getvalue()
        assert "master key: version 1 -> 2" in text
        assert "2 version keys, 1 quarantine keys; 0 already current; 1 destroyed (skipped)" in text
        provider = kek_provider()
        for version in (sealed_version, open_version):
            assert provider.kek_master(name=version.key_name) == 2
        command_events = AuditEvent.objects.filter(action="custody.key_rewrap")
        assert command_events.count() == 3
        assert all(e.actor_id is None and e.actor_name.startswith("command line") for e in command_events)

    def test_rewrap_only_finishes_without_a_new_master(self, sealed_version, ops):
        services.master_key_rotate(actor=ops)
        out = StringIO()
        call_command("keys_rotate", "--rewrap-only", stdout=out)
        assert "1 version keys" in out.getvalue()
        assert kek_provider().master_current() == 2
        call_command("keys_rotate", "--rewrap-only", stdout=out)
        assert "0 version keys, 0 quarantine keys; 1 already current" in out.getvalue()

    def test_without_rewrap_the_existing_keys_stay_under_their_old_master(self, sealed_version):
        call_command("keys_rotate", stdout=StringIO())
        assert kek_provider().kek_master(name=sealed_version.key_name) == 1


class TestDataKeyRotate:
    def test_reencrypts_every_shard_under_a_new_data_key_and_audits_both_roots(
        self, sealed_version, ops, alice, bolt, settings
    ):
        old_root = sealed_version.merkle_root
        old_blobs = list(sealed_version.shards.values_list("blob_key", flat=True))
        old_wrapped = stored(sealed_version.wrapped_data_key)
        samples_before = services.report_samples(actor=alice, version=sealed_version)

        rotated = services.version_data_key_rotate(actor=ops, version=sealed_version)

        assert rotated.key_version == 2 and stored(rotated.wrapped_data_key) != old_wrapped
        assert rotated.merkle_root != old_root
        assert read_all(rotated, bolt) == list(range(30))
        assert services.report_samples(actor=alice, version=rotated) == samples_before
        assert not any((settings.BLOB_DIR / key).exists() for key in old_blobs)
        event = AuditEvent.objects.get(action="custody.data_key_rotate")
        assert event.details["old_merkle_root"] == old_root
        assert event.details["merkle_root"] == rotated.merkle_root
        assert event.details["from_key_version"] == 1 and event.details["to_key_version"] == 2
        decrypt = AuditEvent.objects.get(action="custody.decrypt", details__what="data_key_rotate")
        assert decrypt.details["purpose"] == "rekey"

    def test_the_old_wrapped_data_key_no_longer_opens_the_shards(self, sealed_version, ops):
        old_key = kek_provider().unwrap_data_key(
            name=sealed_version.key_name, wrapped=stored(sealed_version.wrapped_data_key), key_version=1
        )
        rotated = services.version_data_key_rotate(actor=ops, version=sealed_version)
        shard = rotated.shards.first()
        assert shard is not None
        with pytest.raises(IntegrityFailure):
            shard_records(rotated, shard, old_key)

    def test_refuses_a_version_that_is_not_sealed(self, version, ops):
        with pytest.raises(Conflict) as caught:
            services.version_data_key_rotate(actor=ops, version=version)
        assert caught.value.code == "custody.version_not_sealed"

    def test_refuses_a_disabled_key(self, sealed_version, ops):
        services.version_key_disable(actor=ops, version=sealed_version, reason="incident")
        with pytest.raises(KeyUnavailable):
            services.version_data_key_rotate(actor=ops, version=sealed_version)


class TestVersionKeyDisable:
    def test_a_disabled_key_stops_streams_until_it_is_enabled_again(self, sealed_version, ops, bolt):
        services.version_key_disable(actor=ops, version=sealed_version, reason="suspected leak")
        with pytest.raises(KeyUnavailable) as caught:
            next(iter(stream_of(sealed_version, bolt)))
        assert caught.value.code == "custody.key_disabled"
        assert kek_provider().kek_state(name=sealed_version.key_name) == "disabled"

        services.version_key_enable(actor=ops, version=sealed_version, reason="false alarm")
        assert read_all(sealed_version, bolt, "job-2") == list(range(30))
        actions = list(
            AuditEvent.objects.filter(action__startswith="custody.key_").values_list("action", flat=True)
        )
        assert actions == ["custody.key_disable", "custody.key_enable"]

    def test_the_providers_own_samples_are_unreadable_too(self, sealed_version, ops, alice):
        services.version_key_disable(actor=ops, version=sealed_version, reason="suspected leak")
        with pytest.raises(KeyUnavailable):
            services.report_samples(actor=alice, version=sealed_version)

    def test_repeating_a_disable_keeps_the_first_time_and_audits_once(self, sealed_version, ops):
        first = services.version_key_disable(actor=ops, version=sealed_version, reason="one")
        again = services.version_key_disable(actor=ops, version=sealed_version, reason="two")
        assert again.key_disabled_at == first.key_disabled_at
        assert AuditEvent.objects.filter(action="custody.key_disable").count() == 1

    def test_needs_a_reason(self, sealed_version, ops):
        with pytest.raises(Invalid) as caught:
            services.version_key_disable(actor=ops, version=sealed_version, reason="  ")
        assert caught.value.errors[0]["pointer"] == "/reason"

    def test_only_operators_disable_or_enable(self, sealed_version, alice, audrey):
        for actor in (alice, audrey):
            with pytest.raises(NotPermitted):
                services.version_key_disable(actor=actor, version=sealed_version, reason="x")
            with pytest.raises(NotPermitted):
                services.version_key_enable(actor=actor, version=sealed_version)


class TestVersionKeyDestroy:
    def test_after_the_destroy_nothing_decrypts_even_with_a_database_backup(
        self, sealed_version, ops, alice, bolt
    ):
        grant = grant_for_test(sealed_version, bolt)
        backup = DatasetVersion.objects.filter(pk=sealed_version.pk).values().get()
        version = taken_down_and_disabled(sealed_version, ops)

        services.version_key_destroy(actor=ops, version=version, confirm=services.version_label(version))

        provider = kek_provider()
        assert provider.kek_state(name=version.key_name) == "destroyed"
        with pytest.raises(KeyUnavailable) as caught:
            provider.unwrap_data_key(
                name=version.key_name, wrapped=stored(backup["wrapped_data_key"]), key_version=1
            )
        assert caught.value.code == "custody.key_destroyed"
        # Restore the version's row from the backup: sealed, key fields as they were.
        DatasetVersion.objects.filter(pk=version.pk).update(
            state=backup["state"],
            wrapped_data_key=backup["wrapped_data_key"],
            wrapped_pseudonym_key=backup["wrapped_pseudonym_key"],
            key_disabled_at=backup["key_disabled_at"],
            key_destroyed_at=None,
        )
        grant.state = "active"
        grant.save(update_fields=["state"])
        restored = DatasetVersion.objects.get(pk=version.pk)
        with pytest.raises(KeyUnavailable):
            next(iter(services.grant_stream_open(grant=grant, consumer_ref="job-9", purpose="license")))
        with pytest.raises(KeyUnavailable):
            services.report_samples(actor=alice, version=restored)
        with pytest.raises(KeyUnavailable):
            services.version_key_enable(actor=ops, version=restored)

    def test_is_audited_and_repeating_it_is_a_no_op(self, sealed_version, ops):
        version = taken_down_and_disabled(sealed_version, ops)
        label = services.version_label(version)
        services.version_key_destroy(actor=ops, version=version, confirm=label)
        again = services.version_key_destroy(actor=ops, version=version, confirm="anything")
        assert again.key_destroyed_at is not None
        event = AuditEvent.objects.get(action="custody.key_destroy")
        assert event.details["key"] == version.key_name and event.actor_id == ops.pk
        assert not version.contributions.filter(quarantine_shredded_at__isnull=True).exists()

    def test_refuses_before_the_delay_has_passed(self, sealed_version, ops):
        version = taken_down_and_disabled(sealed_version, ops, waited=False)
        with pytest.raises(Conflict) as caught:
            services.version_key_destroy(actor=ops, version=version, confirm=services.version_label(version))
        assert caught.value.code == "custody.shred_too_early"
        assert kek_provider().kek_state(name=version.key_name) == "disabled"

    def test_the_delay_is_a_setting(self, sealed_version, ops, settings):
        settings.SHRED_DELAY_SECONDS = 0
        version = taken_down_and_disabled(sealed_version, ops, waited=False)
        services.version_key_destroy(actor=ops, version=version, confirm=services.version_label(version))
        assert kek_provider().kek_state(name=version.key_name) == "destroyed"

    def test_refuses_a_key_that_was_not_disabled_first(self, sealed_version, ops):
        services.version_takedown(actor=ops, version=sealed_version, reason="erase")
        with pytest.raises(Conflict) as caught:
            services.version_key_destroy(
                actor=ops, version=sealed_version, confirm=services.version_label(sealed_version)
            )
        assert caught.value.code == "custody.key_not_disabled"

    def test_refuses_a_version_still_in_use(self, sealed_version, ops):
        services.version_key_disable(actor=ops, version=sealed_version, reason="incident")
        DatasetVersion.objects.filter(pk=sealed_version.pk).update(
            key_disabled_at=timezone.now() - timedelta(days=9)
        )
        with pytest.raises(Conflict) as caught:
            services.version_key_destroy(
                actor=ops, version=sealed_version, confirm=services.version_label(sealed_version)
            )
        assert caught.value.code == "custody.version_in_use"

    def test_refuses_a_confirmation_that_is_not_the_versions_label(self, sealed_version, ops):
        version = taken_down_and_disabled(sealed_version, ops)
        assert services.version_label(version) == "acme-corpora/support-tickets/v1"
        with pytest.raises(Invalid) as caught:
            services.version_key_destroy(actor=ops, version=version, confirm=str(version.pk))
        assert caught.value.code == "custody.confirmation_mismatch"
        assert kek_provider().kek_state(name=version.key_name) == "disabled"

    def test_only_operators_destroy(self, sealed_version, ops, alice):
        version = taken_down_and_disabled(sealed_version, ops)
        with pytest.raises(NotPermitted):
            services.version_key_destroy(
                actor=alice, version=version, confirm=services.version_label(version)
            )


class TestVersionKeyCommand:
    def test_disables_enables_and_destroys_with_the_label_typed_back(self, sealed_version, ops):
        out = StringIO()
        call_command("version_key", "disable", sealed_version.public_id, "--reason", "incident", stdout=out)
        assert "key: disabled" in out.getvalue()
        call_command("version_key", "enable", sealed_version.public_id, stdout=out)
        assert kek_provider().kek_state(name=sealed_version.key_name) == "active"

        version = taken_down_and_disabled(sealed_version, ops)
        label = services.version_label(version)
        with pytest.raises(CommandError, match=f"--confirm {label}"):
            call_command("version_key", "destroy", version.public_id, stdout=out)
        call_command("version_key", "destroy", version.public_id, "--confirm", label, stdout=out)
        assert "key: destroyed" in out.getvalue()

    def test_reports_domain_errors_with_their_code(self, sealed_version):
        with pytest.raises(CommandError, match=r"custody\.reason_required"):
            call_command("version_key", "disable", sealed_version.public_id, stdout=StringIO())

    def test_rotates_a_data_key(self, sealed_version):
        out = StringIO()
        call_command("version_key", "rotate-data", sealed_version.public_id, stdout=out)
        assert "data key version 2" in out.getvalue()


class TestKeysCheckAfterARestore:
    def test_a_restored_key_backup_brings_a_destroyed_key_back_until_keys_check_fixes_it(
        self, sealed_version, ops, settings
    ):
        version = taken_down_and_disabled(sealed_version, ops)
        key_dir = settings.KEY_DIR / "custody"
        backup = {path.name: path.read_bytes() for path in key_dir.iterdir()}
        services.version_key_destroy(actor=ops, version=version, confirm=services.version_label(version))
        for name, data in backup.items():  # the key directory restored from the older backup
            (key_dir / name).write_bytes(data)
        assert kek_provider().kek_state(name=version.key_name) == "disabled"

        out = StringIO()
        with pytest.raises(CommandError, match="1 keys differ"):
            call_command("keys_check", stdout=out)
        assert f"{version.key_name}: the database says destroyed, the key provider disabled" in out.getvalue()
        call_command("keys_check", "--fix", stdout=out)
        assert kek_provider().kek_state(name=version.key_name) == "destroyed"
        assert AuditEvent.objects.filter(action="custody.key_destroy", details__again=True).count() == 1
        call_command("keys_check", stdout=out)
        assert "keys match the database (0 fixed)" in out.getvalue()

    def test_a_restored_quarantine_key_is_destroyed_again(self, version, upload, alice, ops, settings):
        contribution = upload(version, jsonl([{"text": "raw upload"}]))
        path = settings.KEY_DIR / "custody" / f"kek-{contribution.quarantine_key_name}.json"
        saved = path.read_bytes()
        services.version_takedown(actor=ops, version=version, reason="wrong file")
        path.write_bytes(saved)
        call_command("keys_check", "--fix", stdout=StringIO())
        assert kek_provider().kek_state(name=contribution.quarantine_key_name) == "destroyed"

    def test_reports_a_destroy_that_a_restored_database_does_not_know_about(self, sealed_version, ops):
        version = taken_down_and_disabled(sealed_version, ops)
        services.version_key_destroy(actor=ops, version=version, confirm=services.version_label(version))
        DatasetVersion.objects.filter(pk=version.pk).update(key_destroyed_at=None)  # an older database
        out = StringIO()
        with pytest.raises(CommandError):
            call_command("keys_check", "--fix", stdout=out)
        assert "the database says disabled, the key provider destroyed" in out.getvalue()


# --- the operator API ------------------------------------------------------------------------


@pytest.fixture
def ops_client(ops) -> APIClient:
    client = APIClient()
    login_with_otp(client, ops)
    return client


class TestOpsKeysApi:
    def test_lists_the_master_version_and_every_versions_key(
        self, ops_client, sealed_version, alice, dataset
    ):
        services.version_create(actor=alice, dataset=dataset)
        body = ops_client.get("/api/v1/ops/keys").json()
        assert body["master_version"] == 1 and body["count"] == 2
        row = next(r for r in body["results"] if r["version_id"] == sealed_version.public_id)
        assert row["key_state"] == "active" and row["key_master"] == 1
        assert row["version_label"] == services.version_label(sealed_version)

    def test_rotates_with_rewrap_and_says_how_many_keys_moved(self, ops_client, sealed_version):
        response = ops_client.post("/api/v1/ops/keys/rotate", {"rewrap_all": True}, format="json")
        assert response.status_code == 200
        assert response.json() == {
            "previous_master_version": 1,
            "master_version": 2,
            "rewrapped_versions": 1,
            "rewrapped_quarantine": 0,
            "already_current": 0,
            "destroyed": 0,
        }

    def test_runs_the_shred_in_two_steps(self, ops_client, sealed_version, ops, settings):
        url = f"/api/v1/ops/versions/{sealed_version.public_id}/key"
        services.version_takedown(actor=ops, version=sealed_version, reason="erase")
        assert ops_client.post(f"{url}/disable", {"reason": "erase"}, format="json").json()["key_state"] == (
            "disabled"
        )
        label = services.version_label(sealed_version)
        early = ops_client.post(f"{url}/destroy", {"confirm": label}, format="json")
        assert early.status_code == 409 and early["Content-Type"] == "application/problem+json"
        assert early.json()["code"] == "custody.shred_too_early"
        settings.SHRED_DELAY_SECONDS = 0
        wrong = ops_client.post(f"{url}/destroy", {"confirm": "nope"}, format="json")
        assert wrong.status_code == 422 and wrong.json()["errors"][0]["pointer"] == "/confirm"
        done = ops_client.post(f"{url}/destroy", {"confirm": label}, format="json")
        assert done.status_code == 200 and done.json()["key_state"] == "destroyed"
        gone = ops_client.post(f"{url}/enable", {}, format="json")
        assert gone.status_code == 409 and gone.json()["code"] == "custody.key_destroyed"

    def test_auditors_read_but_do_not_act(self, audrey, sealed_version):
        client = APIClient()
        client.force_login(audrey)
        assert client.get(f"/api/v1/ops/versions/{sealed_version.public_id}/key").status_code == 200
        response = client.post("/api/v1/ops/keys/rotate", {}, format="json")
        assert response.status_code == 403 and response.json()["code"] == "common.operator_only"

    def test_an_operator_session_without_the_second_factor_is_refused(self, ops, sealed_version):
        client = APIClient()
        client.force_login(ops)
        response = client.post("/api/v1/ops/keys/rotate", {}, format="json")
        assert response.status_code == 401 and response.json()["code"] == "common.otp_required"
        assert kek_provider().master_current() == 1

    def test_api_tokens_are_refused_even_for_an_operator(self, ops, acme, token_for, sealed_version):
        MembershipFactory(user=ops, organisation=acme, role="admin")
        client = token_for(ops, acme, ["read", "provide"])
        response = client.post(
            f"/api/v1/ops/versions/{sealed_version.public_id}/key/disable", {"reason": "x"}, format="json"
        )
        assert response.status_code == 403 and response.json()["code"] == "custody.session_required"
        assert kek_provider().kek_state(name=sealed_version.key_name) == "active"

    def test_an_unknown_version_is_not_found(self, ops_client, db):
        response = ops_client.get("/api/v1/ops/versions/dsv_0000000000000000/key")
        assert response.status_code == 404 and response.json()["code"] == "custody.version_not_found"
