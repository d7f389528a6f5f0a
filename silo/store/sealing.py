"""Sealing secrets for the database: AES-256-GCM with a key kept in a file of its own.

The caller keys' secrets must be readable by the server (a SigV4 signature is checked with the secret
itself, not a hash of it), yet a copy of the database alone must not reveal them. So each secret is
stored encrypted and authenticated with AES-GCM (`cryptography`'s AESGCM), under a 256-bit key that
lives in `<data-dir>/secrets.key` (mode 0600), never in the database. The key id is the associated
data: a sealed secret moved to another key's row does not open.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

KEY_BYTES = 32
NONCE_BYTES = 12
FILE_NAME = "secrets.key"


class SealingKeyError(Exception):
    """The sealing key's file cannot be used; the message says why and what to do."""


class Unsealable(Exception):
    """A sealed value does not open with this key (another key's file, or a changed row)."""


class Sealer:
    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise SealingKeyError(f"a sealing key is {KEY_BYTES} bytes, not {len(key)}")
        self._aead = AESGCM(key)

    @classmethod
    def in_directory(cls, data_dir: Path) -> Sealer:
        """The sealer of a data directory, its key file made (0600) on first use."""
        return cls(load_or_create_key(data_dir / FILE_NAME))

    def seal(self, plaintext: bytes, associated: bytes) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, plaintext, associated)

    def unseal(self, sealed: bytes, associated: bytes) -> bytes:
        try:
            return self._aead.decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], associated)
        except InvalidTag:
            raise Unsealable("the sealed value does not open with this sealing key") from None


def load_or_create_key(
    path: Path,
    *,
    what: str = "silo's sealing key",
    guards: str = "it opens every caller key's secret",
    lost: str = "the caller keys sealed with it cannot be opened without it",
) -> bytes:
    """The key in `path`, or a new random one written there, readable by its owner only. A key file that
    others may read, or that is not a key, is refused: every secret of the database opens with it.

    Other keys of the data directory are kept the same way (the tenant tokens' signing key): `what` names
    the key, `guards` says what a copy of it gives away, `lost` what is lost with it, in the refusals."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        pass
    else:
        key = os.urandom(KEY_BYTES)
        try:
            os.write(fd, key)
            os.fsync(fd)
        finally:
            os.close(fd)
        return key
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as exc:
        raise SealingKeyError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise SealingKeyError(f"{path} is not a regular file; it must hold {what}")
        if info.st_mode & 0o077:
            raise SealingKeyError(
                f"{path} may be read by others (mode {stat.S_IMODE(info.st_mode):04o}); {guards}. Make it "
                f"readable by its owner only: chmod 600 {path}"
            )
        key = os.read(fd, KEY_BYTES + 1)
    finally:
        os.close(fd)
    if len(key) != KEY_BYTES:
        raise SealingKeyError(
            f"{path} holds {len(key)} bytes, not {what} of {KEY_BYTES} bytes; restore it from a backup ({lost})"
        )
    return key
