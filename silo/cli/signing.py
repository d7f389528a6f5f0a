"""`silo signing-profile add | list | remove` and `silo sign`: code signing with silo's own profiles.

A profile is an Ed25519 public key registered with the server under a name; `silo sign` writes the
signature of a zip, made with the profile's private key, into the zip's comment (silo.signature says
why there and what exactly is signed). Make a key pair with `openssl genpkey -algorithm ed25519 -out
KEY.pem` and register its public half (`openssl pkey -in KEY.pem -pubout`, or the private key file itself:
only its public key is sent).
"""

from __future__ import annotations

import json
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from silo import signature
from silo.cli.client import Client

PATH = "/silo/v1/signing-profiles"


def _public_pem(keyfile: Path) -> str:
    try:
        pem = keyfile.read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read the key file: {exc}") from None
    if b"PRIVATE KEY" in pem:
        public = signature.load_private_key(pem).public_key()
    else:
        public = signature.load_public_key(pem)
    raw = public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return raw.decode()


def add(client: Client, name: str, keyfile: Path) -> int:
    profile = client.json("POST", PATH, {"Name": name, "PublicKey": _public_pem(keyfile)})
    print(f"signing profile {profile['Name']}: {profile['SigningProfileVersionArn']}")
    print("name it in a code signing configuration's AllowedPublishers.SigningProfileVersionArns")
    return 0


def show(client: Client, as_json: bool) -> int:
    profiles = client.json("GET", PATH)["SigningProfiles"]
    if as_json:
        print(json.dumps(profiles, indent=2))
        return 0
    for p in profiles:
        print(f"{p['Name']}\t{p['SigningProfileVersionArn']}")
    return 0


def remove(client: Client, name: str) -> int:
    client.request("DELETE", f"{PATH}/{name}")
    print(f"signing profile {name} removed: what it signed is no longer trusted")
    return 0


def sign(package: Path, keyfile: Path, profile: str | None, output: Path | None) -> int:
    """Sign a zip as `profile` (default: the key file's name without its suffix)."""
    key = signature.load_private_key(keyfile.read_bytes())
    name = profile or keyfile.stem
    try:
        signed = signature.sign(package.read_bytes(), name, key)
    except signature.SignatureFormatError as exc:
        raise ValueError(f"{package}: {exc}") from None
    target = output or package
    target.write_bytes(signed)
    print(f"{target}: signed as signing profile {name}")
    return 0
