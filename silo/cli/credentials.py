"""Credentials in the AWS shared-credentials format: the file `silo serve` writes, and how the CLI finds a key.

The server writes `<data-dir>/credentials` (mode 0600) with a profile `silo` holding an administrator key
and the server's region, which botocore reads from a credentials file too; so boto3, the AWS CLI and the
`silo` CLI work with only AWS_SHARED_CREDENTIALS_FILE and AWS_PROFILE set.

The CLI looks, in order: AWS_ACCESS_KEY_ID with AWS_SECRET_ACCESS_KEY (as botocore does); the profile
AWS_PROFILE (default `silo`) of AWS_SHARED_CREDENTIALS_FILE, else of `.silo/credentials` under the working
directory (where `make run` keeps the server's data), else of `~/.aws/credentials`.
"""

from __future__ import annotations

import configparser
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

PROFILE = "silo"
FILE_NAME = "credentials"
LOCAL_FILE = Path(".silo") / FILE_NAME
DEFAULT_REGION = "us-east-1"


@dataclass(frozen=True, slots=True)
class Credentials:
    access_key: str
    secret: str
    region: str
    source: str  # where they were found, for messages


def write(path: Path, profile: str, access_key: str, secret: str, region: str) -> None:
    """Write the file whole, readable by its owner only, replacing what was there in one rename."""
    text = f"[{profile}]\naws_access_key_id = {access_key}\naws_secret_access_key = {secret}\nregion = {region}\n"
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        os.write(fd, text.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def read(path: Path, profile: str) -> tuple[str, str] | None:
    """The access key id and secret of `profile` in the file at `path`; None when it has none."""
    section = _profile(path, profile)
    if section is None:
        return None
    key, secret = section.get("aws_access_key_id"), section.get("aws_secret_access_key")
    if not key or not secret:
        return None
    return key.strip(), secret.strip()


def _profile(path: Path, profile: str) -> Mapping[str, str] | None:
    parser = configparser.RawConfigParser()
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError):
        return None
    try:
        parser.read_string(text, str(path))
    except configparser.Error:
        return None
    if not parser.has_section(profile):
        return None
    return dict(parser.items(profile))


def find(environ: Mapping[str, str] | None = None, cwd: Path | None = None) -> Credentials | None:
    """The credentials the CLI signs with (see the module's docstring), or None when there are none."""
    env = os.environ if environ is None else environ
    region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")
    key, secret = env.get("AWS_ACCESS_KEY_ID"), env.get("AWS_SECRET_ACCESS_KEY")
    if key and secret:
        return Credentials(key, secret, region or DEFAULT_REGION, "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")
    profile = env.get("AWS_PROFILE") or PROFILE
    given = env.get("AWS_SHARED_CREDENTIALS_FILE")
    if given:
        candidates = [Path(given).expanduser()]
    else:
        candidates = [(cwd or Path.cwd()) / LOCAL_FILE, Path("~/.aws/credentials").expanduser()]
    for path in candidates:
        section = _profile(path, profile)
        if section is None:
            continue
        key, secret = section.get("aws_access_key_id"), section.get("aws_secret_access_key")
        if key and secret:
            return Credentials(
                key.strip(),
                secret.strip(),
                region or section.get("region", "").strip() or DEFAULT_REGION,
                f"profile {profile} of {path}",
            )
    return None
