# SPDX-License-Identifier: GPL-3.0-or-later
"""Keys: ed25519 key pairs, their PEM files, and their sha3-384 ids."""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ..errors import KeyFileError
from .headers import NAME


def encode_digest(raw: bytes) -> str:
    """encode_digest writes a digest as snapd does: base64url without padding."""
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def sha3_384(data: bytes) -> str:
    """sha3_384 returns the digest of data as snapd writes it (64 characters of base64url)."""
    return encode_digest(hashlib.sha3_384(data).digest())


def file_sha3_384(path: str | Path) -> tuple[str, int]:
    """file_sha3_384 returns the sha3-384 (as snapd writes it) and the size of a file."""
    h = hashlib.sha3_384()
    n = 0
    with open(path, "rb") as f:
        while chunk := f.read(1024 * 1024):
            h.update(chunk)
            n += len(chunk)
    return encode_digest(h.digest()), n


class PublicKey:
    """PublicKey is an ed25519 public key; its id is the sha3-384 of its DER encoding."""

    def __init__(self, key: Ed25519PublicKey) -> None:
        self._key = key
        self._der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        self.id = sha3_384(self._der)

    @classmethod
    def from_pem(cls, data: str | bytes, where: str = "public key") -> PublicKey:
        """from_pem reads a PEM "PUBLIC KEY" block (as in an account-key body)."""
        raw = data.encode() if isinstance(data, str) else data
        try:
            key = serialization.load_pem_public_key(raw)
        except (ValueError, TypeError) as e:
            raise KeyFileError(f"cannot read {where}: not a PEM public key ({e})") from None
        if not isinstance(key, Ed25519PublicKey):
            raise KeyFileError(f"cannot read {where}: it is not an ed25519 key")
        return cls(key)

    def to_pem(self) -> str:
        """to_pem writes the key as a PEM "PUBLIC KEY" block."""
        return self._key.public_bytes(serialization.Encoding.PEM,
                                      serialization.PublicFormat.SubjectPublicKeyInfo).decode()

    def verify(self, signature: bytes, data: bytes) -> bool:
        """verify says whether signature is this key's signature of data."""
        try:
            self._key.verify(signature, data)
        except InvalidSignature:
            return False
        return True

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PublicKey) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    def __repr__(self) -> str:
        return f"PublicKey({self.id})"


class PrivateKey:
    """PrivateKey is an ed25519 private key, kept in a PEM (PKCS#8) file."""

    def __init__(self, key: Ed25519PrivateKey) -> None:
        self._key = key
        self.public_key = PublicKey(key.public_key())

    @property
    def id(self) -> str:
        """id is the id of the public key: what sign-key-sha3-384 names."""
        return self.public_key.id

    @classmethod
    def generate(cls) -> PrivateKey:
        """generate makes a new random key."""
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_pem(cls, data: str | bytes, where: str = "private key") -> PrivateKey:
        """from_pem reads an unencrypted PEM "PRIVATE KEY" block."""
        raw = data.encode() if isinstance(data, str) else data
        try:
            key = serialization.load_pem_private_key(raw, password=None)
        except (ValueError, TypeError) as e:
            raise KeyFileError(f"cannot read {where}: not an unencrypted PEM private key ({e})") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise KeyFileError(f"cannot read {where}: it is not an ed25519 key")
        return cls(key)

    def to_pem(self) -> str:
        """to_pem writes the key as an unencrypted PKCS#8 PEM block."""
        return self._key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()).decode()

    def sign(self, data: bytes) -> bytes:
        """sign returns the ed25519 signature of data."""
        return self._key.sign(data)

    def __repr__(self) -> str:
        return f"PrivateKey({self.id})"


def load_private_key(path: str | Path) -> PrivateKey:
    """load_private_key reads a private key file."""
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise KeyFileError(f"cannot read key {path}: {e.strerror}") from None
    return PrivateKey.from_pem(data, f"key {path}")


def load_public_key(path: str | Path) -> PublicKey:
    """load_public_key reads a public key file (or the public half of a private key file)."""
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise KeyFileError(f"cannot read key {path}: {e.strerror}") from None
    if b"PRIVATE KEY" in data:
        return PrivateKey.from_pem(data, f"key {path}").public_key
    return PublicKey.from_pem(data, f"key {path}")


def create_key(directory: str | Path, name: str) -> tuple[Path, Path, PrivateKey]:
    """create_key writes a new key pair as NAME.pem (private, mode 0600) and NAME.pub.pem in directory.

    It refuses to overwrite an existing file.
    """
    if not NAME.match(name):
        raise KeyFileError(f"cannot create key {name!r}: use lowercase letters, digits and single dashes")
    directory = Path(directory)
    private, public = directory / f"{name}.pem", directory / f"{name}.pub.pem"
    for p in (private, public):
        if p.exists() or p.is_symlink():
            raise KeyFileError(f"cannot create key {name!r}: {p} already exists")
    key = PrivateKey.generate()
    try:
        fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(key.to_pem())
        public.write_text(key.public_key.to_pem())
    except OSError as e:
        raise KeyFileError(f"cannot create key {name!r} in {directory}: {e.strerror}") from None
    return private, public, key
