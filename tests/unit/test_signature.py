"""How a signature travels in a zip's comment: what is signed, what a change breaks, what is not one."""

from __future__ import annotations

import io
import zipfile

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from silo import signature
from tests.support import zip_files


def test_a_signed_zip_unpacks_as_before_and_verifies() -> None:
    key = Ed25519PrivateKey.generate()
    original = zip_files({"app.py": "x = 1\n"})
    signed = signature.sign(original, "release", key)
    with zipfile.ZipFile(io.BytesIO(signed)) as zf:
        assert zf.read("app.py") == b"x = 1\n"
    found = signature.read(signed)
    assert found is not None and found.profile == "release"
    assert signature.verifies(found, key.public_key())
    assert not signature.verifies(found, Ed25519PrivateKey.generate().public_key())
    # Signing again (another profile, another key) replaces the signature, it does not sign a signature.
    again = signature.read(signature.sign(signed, "other", key))
    assert again is not None and again.content == found.content and again.profile == "other"


def test_a_comment_that_was_there_is_replaced_and_an_unsigned_zip_has_none() -> None:
    buf = io.BytesIO(zip_files({"a": "1"}))
    with zipfile.ZipFile(buf, "a") as zf:
        zf.comment = b"built by make"
    assert signature.read(buf.getvalue()) is None
    signed = signature.read(signature.sign(buf.getvalue(), "p1", Ed25519PrivateKey.generate()))
    assert signed is not None and b"built by make" not in signed.content


def test_the_signature_covers_every_byte_but_the_comment() -> None:
    key = Ed25519PrivateKey.generate()
    signed = bytearray(signature.sign(zip_files({"app.py": "x = 1\n"}), "release", key))
    signed[40] ^= 1
    found = signature.read(bytes(signed))
    assert found is not None and not signature.verifies(found, key.public_key())


@pytest.mark.parametrize(
    "data",
    [b"not a zip", zip_files({"a": "1"})[:-3]],
)
def test_what_is_not_a_zip_is_said_so(data: bytes) -> None:
    with pytest.raises(signature.SignatureFormatError):
        signature.read(data)


def test_a_malformed_signature_line_is_refused() -> None:
    buf = io.BytesIO(zip_files({"a": "1"}))
    with zipfile.ZipFile(buf, "a") as zf:
        zf.comment = b"silo-signature/1 name !!!"
    with pytest.raises(signature.SignatureFormatError):
        signature.read(buf.getvalue())
