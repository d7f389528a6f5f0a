"""The `sts` provider: silo assumes the function's execution role once per tenant, with AWS STS.

    AssumeRole(RoleArn=<the function's Role>, RoleSessionName=<the tenant's, silo.credentials.naming>,
               DurationSeconds=<the setting's>, Tags=[TenantId=<tenant>], TransitiveTagKeys=[TenantId],
               Policy=<the setting's SessionPolicy, ${TenantId} replaced>)

silo calls with its own AWS credentials, found by botocore's usual chain (variables, the shared files, an
instance or container role), at `silo serve --sts-endpoint` (default: the region's AWS STS endpoint). The
role's trust policy must let silo's identity sts:AssumeRole and sts:TagSession. The tag carries the tenant
into the role's own policies (`${aws:PrincipalTag/TenantId}`), and, transitive, into roles chained from it.

botocore is synchronous: each call runs in a worker thread. It is imported on first use (a few hundred
milliseconds of imports a server with no Sts setting never pays). A failure is told as StsRefused (STS answered
with an error: the role, its trust, the policy) or StsUnreachable (no answer, or silo has no credentials of
its own), each with a message for the function's caller and one for the operator.
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass
from typing import Any

from silo.credentials import naming, policy
from silo.credentials.errors import ProviderError
from silo.credentials.lifetime import Lease

TAG = "TenantId"


@dataclass(frozen=True, slots=True)
class AwsCredentials:
    """Temporary AWS credentials of one tenant. Never logged, never in silo's API: repr hides the secrets."""

    access_key_id: str
    secret_access_key: str
    session_token: str
    lease: Lease

    def __repr__(self) -> str:
        return f"AwsCredentials(access_key_id={self.access_key_id[:4]}..., expires_at={self.lease.expires_at})"

    def container_document(self) -> dict[str, str]:
        """What the AWS SDKs' container-credentials provider reads (the ECS task role's shape)."""
        expiry = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.lease.expires_at))
        return {
            "AccessKeyId": self.access_key_id,
            "SecretAccessKey": self.secret_access_key,
            "Token": self.session_token,
            "Expiration": expiry,
        }


class StsError(ProviderError):
    """AssumeRole failed. `str()` is for the operator's log; `public` for the function's caller."""


class StsRefused(StsError):
    """STS answered with an error: the role, its trust policy or the session policy are not right."""


class StsUnreachable(StsError):
    """STS could not be asked: no answer, or silo has no AWS credentials of its own."""


@dataclass(frozen=True, slots=True)
class AssumeRequest:
    """One tenant's AssumeRole, and the key its credentials are kept under."""

    function_arn: str  # not sent: the credentials of two functions are kept apart
    role_arn: str
    tenant_id: str
    duration_s: int
    session_policy: str | None  # the template; rendered for the tenant here

    def parameters(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "RoleArn": self.role_arn,
            "RoleSessionName": naming.session_name(self.tenant_id),
            "DurationSeconds": self.duration_s,
            "Tags": [{"Key": TAG, "Value": self.tenant_id}],
            "TransitiveTagKeys": [TAG],
        }
        if self.session_policy is not None:
            out["Policy"] = policy.render(self.session_policy, self.tenant_id)
        return out


class StsProvider:
    def __init__(self, region: str, endpoint_url: str | None = None) -> None:
        self.region = region
        self.endpoint_url = endpoint_url or None
        self._client: Any = None
        self._lock = threading.Lock()

    def _sts(self) -> Any:
        # Made on first use, in a worker thread: a botocore client loads its service model from disk.
        with self._lock:
            if self._client is None:
                from botocore.config import Config
                from botocore.session import get_session

                # STS answers in tens of milliseconds; a call waits for it, so botocore does not retry for long.
                config = Config(connect_timeout=5, read_timeout=10, retries={"max_attempts": 3, "mode": "standard"})
                self._client = get_session().create_client(
                    "sts", region_name=self.region, endpoint_url=self.endpoint_url, config=config
                )
            return self._client

    async def assume(self, request: AssumeRequest) -> AwsCredentials:
        return await asyncio.to_thread(self.assume_now, request)

    def assume_now(self, request: AssumeRequest) -> AwsCredentials:
        from botocore.exceptions import BotoCoreError, ClientError

        where = self.endpoint_url or f"AWS STS of {self.region}"
        issued = time.time()
        try:
            answer = self._sts().assume_role(**request.parameters())
        except ClientError as exc:
            error = exc.response.get("Error", {})
            code = error.get("Code", "Unknown")
            raise StsRefused(
                f"STS ({where}) refused AssumeRole of {request.role_arn} for tenant {request.tenant_id!r}: {code}: "
                f"{error.get('Message', '')}. The role's trust policy must let silo's own identity sts:AssumeRole "
                "and sts:TagSession, and its MaxSessionDuration cover the Credentials setting's DurationSeconds",
                f"STS refused to give this tenant credentials of the function's role ({code})",
            ) from None
        except BotoCoreError as exc:
            raise StsUnreachable(
                f"STS ({where}) could not be asked for tenant {request.tenant_id!r}'s credentials of "
                f"{request.role_arn}: {exc}. Check silo's own AWS credentials and --sts-endpoint",
                "silo could not reach STS for this tenant's credentials",
            ) from None
        creds = answer["Credentials"]
        expires = creds["Expiration"]
        expires_at = expires.timestamp() if hasattr(expires, "timestamp") else float(expires)
        return AwsCredentials(
            creds["AccessKeyId"], creds["SecretAccessKey"], creds["SessionToken"], Lease(issued, expires_at)
        )
