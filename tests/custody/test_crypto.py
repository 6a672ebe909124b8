"""Shard encryption and the key hierarchy: tampering and shredding are detected."""

from __future__ import annotations

import stat

import pytest

from custody.crypto import ShardIdentity, merkle_root, new_data_key, sha256_hex, shard_open, shard_seal
from custody.exceptions import IntegrityFailure, KeyUnavailable
from custody.keys import LocalKekProvider

RECORDS = b'{"text": "hello"}\n{"text": "world"}\n'


@pytest.fixture
def key() -> bytes:
    return new_data_key()


class TestShardSeal:
    def test_round_trips_and_hides_the_plaintext(self, key):
        identity = ShardIdentity(version_id=7, index=0, key_version=1)
        blob = shard_seal(data_key=key, identity=identity, plaintext=RECORDS)
        assert b"hello" not in blob
        assert shard_open(data_key=key, identity=identity, blob=blob) == RECORDS

    @pytest.mark.parametrize("position", [4, 12, 20, -1])
    def test_a_flipped_bit_fails_authentication(self, key, position):
        identity = ShardIdentity(7, 0, 1)
        blob = bytearray(shard_seal(data_key=key, identity=identity, plaintext=RECORDS))
        blob[position] ^= 0x01
        with pytest.raises(IntegrityFailure) as caught:
            shard_open(data_key=key, identity=identity, blob=bytes(blob))
        assert caught.value.code == "custody.shard_tampered"

    def test_a_swapped_shard_fails(self, key):
        first = shard_seal(data_key=key, identity=ShardIdentity(7, 0, 1), plaintext=b"a")
        with pytest.raises(IntegrityFailure):
            shard_open(data_key=key, identity=ShardIdentity(7, 1, 1), blob=first)

    def test_a_shard_moved_to_another_version_fails(self, key):
        blob = shard_seal(data_key=key, identity=ShardIdentity(7, 0, 1), plaintext=b"a")
        with pytest.raises(IntegrityFailure):
            shard_open(data_key=key, identity=ShardIdentity(8, 0, 1), blob=blob)

    def test_a_truncated_shard_fails_clearly(self, key):
        blob = shard_seal(data_key=key, identity=ShardIdentity(7, 0, 1), plaintext=RECORDS)
        with pytest.raises(IntegrityFailure) as caught:
            shard_open(data_key=key, identity=ShardIdentity(7, 0, 1), blob=blob[:20])
        assert caught.value.code == "custody.shard_corrupt"
        with pytest.raises(IntegrityFailure):
            shard_open(data_key=key, identity=ShardIdentity(7, 0, 1), blob=blob[:-1])


class TestMerkleRoot:
    def test_changes_when_any_leaf_changes_or_moves(self):
        leaves = [sha256_hex(bytes([i])) for i in range(5)]
        root = merkle_root(leaves)
        assert merkle_root(leaves) == root
        assert merkle_root([*leaves[:2], sha256_hex(b"x"), *leaves[3:]]) != root
        assert merkle_root([leaves[1], leaves[0], *leaves[2:]]) != root
        assert merkle_root(leaves[:-1]) != root


class TestLocalKekProvider:
    def test_keys_are_private_files(self, tmp_path):
        provider = LocalKekProvider(tmp_path / "keys")
        provider.kek_create(name="version-1")
        assert stat.S_IMODE((tmp_path / "keys").stat().st_mode) == 0o700
        for path in (tmp_path / "keys").iterdir():
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path

    def test_wraps_and_unwraps_a_data_key_bound_to_its_version(self, tmp_path, key):
        provider = LocalKekProvider(tmp_path)
        provider.kek_create(name="version-1")
        provider.kek_create(name="version-2")
        wrapped = provider.wrap_data_key(name="version-1", data_key=key, key_version=1)
        assert provider.unwrap_data_key(name="version-1", wrapped=wrapped, key_version=1) == key
        with pytest.raises(IntegrityFailure):
            provider.unwrap_data_key(name="version-2", wrapped=wrapped, key_version=1)

    def test_a_disabled_key_refuses_then_reenables(self, tmp_path, key):
        provider = LocalKekProvider(tmp_path)
        provider.kek_create(name="version-1")
        wrapped = provider.wrap_data_key(name="version-1", data_key=key, key_version=1)
        provider.kek_disable(name="version-1")
        with pytest.raises(KeyUnavailable) as caught:
            provider.unwrap_data_key(name="version-1", wrapped=wrapped, key_version=1)
        assert caught.value.code == "custody.key_disabled"
        provider.kek_enable(name="version-1")
        assert provider.unwrap_data_key(name="version-1", wrapped=wrapped, key_version=1) == key

    def test_a_destroyed_key_never_unwraps_again(self, tmp_path, key):
        provider = LocalKekProvider(tmp_path)
        provider.kek_create(name="version-1")
        wrapped = provider.wrap_data_key(name="version-1", data_key=key, key_version=1)
        provider.kek_destroy(name="version-1")
        assert provider.kek_state(name="version-1") == "destroyed"
        with pytest.raises(KeyUnavailable) as caught:
            provider.unwrap_data_key(name="version-1", wrapped=wrapped, key_version=1)
        assert caught.value.code == "custody.key_destroyed"

    def test_master_rotation_keeps_old_keks_working_until_rewrapped(self, tmp_path, key):
        provider = LocalKekProvider(tmp_path)
        provider.kek_create(name="version-1")
        wrapped = provider.wrap_data_key(name="version-1", data_key=key, key_version=1)
        assert provider.master_rotate() == 2
        assert provider.unwrap_data_key(name="version-1", wrapped=wrapped, key_version=1) == key
        assert provider.kek_rewrap(name="version-1") == 2
        (tmp_path / "master-1.key").unlink()
        assert provider.unwrap_data_key(name="version-1", wrapped=wrapped, key_version=1) == key
