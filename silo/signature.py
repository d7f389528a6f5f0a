"""How silo's code signatures travel with a zip, shared by `silo sign` and the server that checks them.

Lambda reads a signature from the S3 object's metadata; silo takes packages in the request itself, and
boto3 and the AWS CLI send nothing but the zip. So the signature travels in the zip's own comment (the
end record's free text, which every unzip ignores), as one line:

    silo-signature/1 <signing profile name> <base64 Ed25519 signature>

What is signed is the zip with its comment emptied (the same bytes with a zero comment length), so the
signature is detached from what it signs and adding it changes nothing that is unpacked. Any comment the
zip had before signing is replaced.
"""

from __future__ import annotations

import base64
import binascii
import re
import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

PREFIX = b"silo-signature/1 "
_END = b"PK\x05\x06"
_END_SIZE = 22
_LINE = re.compile(rb"silo-signature/1 ([a-zA-Z0-9-_]{1,64}) ([A-Za-z0-9+/=]{1,200})")


class SignatureFormatError(ValueError):
    """The bytes are not a zip, or its comment is not one silo signature line."""


@dataclass(frozen=True, slots=True)
class Signed:
    profile: str
    signature: bytes
    content: bytes  # the zip with its comment emptied: what the signature covers


def _end_record(data: bytes) -> int:
    """Where the zip's end record starts: the last one whose comment runs exactly to the end."""
    pos = data.rfind(_END)
    while pos >= 0:
        if pos + _END_SIZE <= len(data):
            (length,) = struct.unpack_from("<H", data, pos + 20)
            if pos + _END_SIZE + length == len(data):
                return pos
        pos = data.rfind(_END, 0, pos)
    raise SignatureFormatError("not a zip: no end of central directory record")


def unsigned_content(data: bytes) -> bytes:
    """The zip with its comment emptied."""
    end = _end_record(data)
    return data[: end + 20] + b"\x00\x00"


def read(data: bytes) -> Signed | None:
    """The signature a zip carries; None when its comment holds none."""
    end = _end_record(data)
    comment = data[end + _END_SIZE :]
    if not comment.startswith(PREFIX):
        return None
    match = _LINE.fullmatch(comment.rstrip(b"\n"))
    if match is None:
        raise SignatureFormatError("the zip's comment starts as a silo signature but is not one")
    try:
        signature = base64.b64decode(match[2], validate=True)
    except binascii.Error as exc:
        raise SignatureFormatError("the signature in the zip's comment is not base64") from exc
    return Signed(match[1].decode(), signature, data[: end + 20] + b"\x00\x00")


def sign(data: bytes, profile: str, key: Ed25519PrivateKey) -> bytes:
    """The zip with `profile`'s signature of it in its comment."""
    content = unsigned_content(data)
    line = PREFIX + profile.encode() + b" " + base64.b64encode(key.sign(content))
    return content[:-2] + struct.pack("<H", len(line)) + line


def verifies(signed: Signed, public_key: Ed25519PublicKey) -> bool:
    try:
        public_key.verify(signed.signature, signed.content)
    except InvalidSignature:
        return False
    return True


def load_private_key(pem: bytes) -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError("the key is not an Ed25519 private key (make one: openssl genpkey -algorithm ed25519)")
    return key


def load_public_key(pem: bytes) -> Ed25519PublicKey:
    key = serialization.load_pem_public_key(pem)
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError("the key is not an Ed25519 public key (openssl pkey -in KEY -pubout)")
    return key
