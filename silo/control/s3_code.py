"""Deployment packages from S3: `Code.S3Bucket/S3Key[/S3ObjectVersion]` on CreateFunction and
UpdateFunctionCode, fetched from the S3 endpoint the server is told about (`s3_endpoint`).

botocore does the S3 side: its S3 client signs the GetObject (SigV4) with silo's own AWS credentials, from
botocore's usual chain (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_PROFILE and the shared
credentials file, a container or instance role), and parses S3's errors. What S3 says goes back to the
caller in Lambda's words: `Error occurred while GetObject. S3 Error Code: NoSuchKey. S3 Error Message:
The specified key does not exist.` (AWS-recorded). A package from S3 may be larger than the 50 MB of a
ZipFile, up to the 250 MB a function may unpack to, as on Lambda; more is refused before it is read.
"""

from __future__ import annotations

import threading
from typing import Any, Protocol
from urllib.parse import urlsplit

import botocore.session
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

from silo.control.validation import S3Location
from silo.errors import InvalidParameterValueException, ServiceException
from silo.store.code import MAX_UNZIPPED_BYTES

NO_ENDPOINT = (
    "This silo server has no S3 endpoint, so it cannot fetch code from S3Bucket/S3Key. Send the package as "
    "ZipFile, or start silo with --s3-endpoint URL (s3_endpoint in its config file)."
)


def check_s3_endpoint(url: str) -> None:
    """Refuse an s3_endpoint that is not an http(s) URL of a host (a ValueError says why); empty is none."""
    if not url:
        return
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        raise ValueError(
            f"s3_endpoint must be an http:// or https:// URL of an S3 endpoint, such as "
            f"https://s3.us-east-1.amazonaws.com or http://127.0.0.1:9000, not {url!r}"
        )


class PackageSource(Protocol):
    """Where FunctionService gets a package it is given the S3 location of."""

    def fetch(self, where: S3Location) -> bytes: ...


class NoS3:
    """A server without an S3 endpoint: every S3 location is refused, saying how to give one."""

    def fetch(self, where: S3Location) -> bytes:
        raise InvalidParameterValueException(NO_ENDPOINT)


class S3Code:
    """GetObject from one S3 endpoint. The client is made on first use (loading botocore's S3 model takes a
    while), then shared: botocore clients are safe to use from several threads."""

    def __init__(
        self,
        endpoint_url: str,
        region: str,
        *,
        limit: int = MAX_UNZIPPED_BYTES,
        session: botocore.session.Session | None = None,
    ) -> None:
        self.endpoint_url = endpoint_url
        self.region = region
        self.limit = limit
        self._session = session
        # botocore makes S3's operations at run time from its service model: no type names get_object.
        self._client: Any = None
        self._lock = threading.Lock()

    def _s3(self) -> Any:
        with self._lock:
            if self._client is None:
                session = self._session or botocore.session.get_session()
                self._client = session.create_client(
                    "s3",
                    endpoint_url=self.endpoint_url,
                    region_name=self.region,
                    # Path-style addressing: a bucket's name never has to resolve as a host of its own.
                    config=Config(
                        s3={"addressing_style": "path"},
                        connect_timeout=5,
                        read_timeout=60,
                        retries={"max_attempts": 3, "mode": "standard"},
                    ),
                )
            return self._client

    def fetch(self, where: S3Location) -> bytes:
        """The object's bytes, or Lambda's InvalidParameterValueException with S3's error code and message."""
        args: dict[str, Any] = {"Bucket": where.bucket, "Key": where.key}
        if where.version is not None:
            args["VersionId"] = where.version
        try:
            response = self._s3().get_object(**args)
            size = int(response.get("ContentLength") or 0)
            body = response["Body"]
            try:
                if size > self.limit:
                    raise InvalidParameterValueException(_too_large(where, size, self.limit))
                data: bytes = body.read(self.limit + 1)
            finally:
                body.close()
        except ClientError as exc:
            error = exc.response.get("Error", {})
            code = error.get("Code") or str(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))
            message = error.get("Message") or "(none)"
            raise InvalidParameterValueException(
                f"Error occurred while GetObject. S3 Error Code: {code}. S3 Error Message: {message}"
            ) from None
        except NoCredentialsError:
            raise ServiceException(
                f"silo has no AWS credentials to fetch s3://{where.bucket}/{where.key} from {self.endpoint_url}: "
                "give the server credentials as botocore finds them (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
                "AWS_PROFILE, or a role), or send the package as ZipFile."
            ) from None
        except BotoCoreError as exc:
            raise ServiceException(
                f"silo could not fetch s3://{where.bucket}/{where.key} from its S3 endpoint {self.endpoint_url}: "
                f"{exc}. Check that the endpoint is up and reachable from the server."
            ) from None
        if len(data) > self.limit:
            raise InvalidParameterValueException(_too_large(where, len(data), self.limit))
        return data


def _too_large(where: S3Location, size: int, limit: int) -> str:
    return (
        f"The object s3://{where.bucket}/{where.key} is {size} bytes or more; a deployment package may be at most "
        f"{limit} bytes (Unzipped size must be smaller than {limit} bytes)."
    )
