"""Ed25519 signing keys (audit checkpoints, job receipts), with key ids and public export.

Keys live with the key provider: a local directory (mode 0700, files 0600)
generated on first use in the embedded default.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from django.conf import settings


def key_id_for(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


@dataclass(frozen=True)
class SigningKey:
    key_id: str
    private: Ed25519PrivateKey

    def sign(self, message: bytes) -> str:
        return base64.b64encode(self.private.sign(message)).decode()

    def public_pem(self) -> str:
        return (
            self.private.public_key()
            .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
            .decode()
        )


class LocalSigningKeyProvider:
    """Signing keys as PEM files in a directory; the newest is ``current``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def _ensure_dir(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        os.chmod(self.directory, 0o700)

    def current(self) -> SigningKey:
        self._ensure_dir()
        pointer = self.directory / "signing-current"
        if pointer.exists():
            return self.get(pointer.read_text().strip())
        return self.rotate()

    def rotate(self) -> SigningKey:
        """Make a new key the current one; old keys stay for verification."""
        self._ensure_dir()
        private = Ed25519PrivateKey.generate()
        key = SigningKey(key_id_for(private.public_key()), private)
        pem = private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        path = self.directory / f"signing-{key.key_id}.pem"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(pem)
        pointer = self.directory / "signing-current"
        tmp = self.directory / "signing-current.tmp"
        tmp.write_text(key.key_id)
        os.chmod(tmp, 0o600)
        os.replace(tmp, pointer)
        return key

    def get(self, key_id: str) -> SigningKey:
        """:raises KeyError: no such key."""
        if not key_id.isalnum():
            raise KeyError(key_id)
        path = self.directory / f"signing-{key_id}.pem"
        if not path.exists():
            raise KeyError(key_id)
        private = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(private, Ed25519PrivateKey):
            raise KeyError(key_id)
        return SigningKey(key_id, private)

    def public_keys(self) -> dict[str, str]:
        """Every key id with its public key (PEM), for independent verification."""
        self._ensure_dir()
        out = {}
        for path in sorted(self.directory.glob("signing-*.pem")):
            key_id = path.stem.removeprefix("signing-")
            out[key_id] = self.get(key_id).public_pem()
        return out

    def check(self) -> None:
        key = self.current()
        signature = key.sign(b"health")
        verify(key.public_pem(), b"health", signature)


def verify(public_pem: str, message: bytes, signature_b64: str) -> None:
    """:raises cryptography.exceptions.InvalidSignature: the signature does not match."""
    public = serialization.load_pem_public_key(public_pem.encode())
    if not isinstance(public, Ed25519PublicKey):
        raise ValueError("not an Ed25519 public key")
    public.verify(base64.b64decode(signature_b64), message)


class PublicKeyRing:
    """Public keys by key id, parsed once, for checking many signatures."""

    def __init__(self, public_pems: dict[str, str]) -> None:
        self._keys: dict[str, Ed25519PublicKey] = {}
        for key_id, pem in public_pems.items():
            public = serialization.load_pem_public_key(pem.encode())
            if isinstance(public, Ed25519PublicKey):
                self._keys[key_id] = public

    def __contains__(self, key_id: object) -> bool:
        return key_id in self._keys

    def verifies(self, key_id: str, message: bytes, signature_b64: str) -> bool:
        """Whether ``signature_b64`` is the key's valid signature of ``message`` (False for unknown keys)."""
        public = self._keys.get(key_id)
        if public is None:
            return False
        try:
            public.verify(base64.b64decode(signature_b64, validate=True), message)
        except (InvalidSignature, binascii.Error, ValueError):
            return False
        return True


def signing_key_provider() -> LocalSigningKeyProvider:
    # With SEALROOM_KEY_PROVIDER=kms only the custody KEKs move to KMS; signing keys stay here.
    if settings.KEY_PROVIDER not in {"local", "kms"}:
        raise ValueError(f"unknown SEALROOM_KEY_PROVIDER {settings.KEY_PROVIDER!r}")
    return LocalSigningKeyProvider(settings.KEY_DIR)
