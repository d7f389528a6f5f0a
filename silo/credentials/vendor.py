"""Per-tenant credentials, vended to the environments bound to that tenant and to no other.

`CredentialVendor` keeps what the providers made: AWS credentials per (function, role, tenant), renewed
in the background once half their life has passed (silo.credentials.lifetime), one AssumeRole at a time
per key however many environments ask. Each environment holds an `EnvironmentCredentials`: its own random
authorization token (the AWS_CONTAINER_AUTHORIZATION_TOKEN its runtime is started with), its tenant once
it is bound, and its tenant token. Before each invocation `prepare()` makes sure the tenant's credentials
are there (so a call whose credentials cannot be had fails before the function runs, with
CredentialsUnavailable), and the environment's Runtime API serves them through `answer()` to whoever
shows the authorization token.

Nothing here logs a credential; the operator's log says who failed to get one, and why.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import secrets
import time
from collections.abc import Callable
from typing import Literal

from silo import errors
from silo.credentials.lifetime import Lease
from silo.credentials.sts import AssumeRequest, AwsCredentials, StsError, StsProvider
from silo.credentials.tokens import DEFAULT_AUDIENCE, TokenSigner
from silo.types import FunctionSpec

log = logging.getLogger(__name__)

Kind = Literal["aws", "token"]
# Past this many cached credentials, expired ones are dropped when a new one is added.
PRUNE_ABOVE = 10_000
# After a failed renewal, the current credentials are handed out this long before STS is asked again, so an
# outage of STS costs it one request per tenant every few seconds, not one per call.
RETRY_AFTER_S = 5.0


class CredentialVendor:
    def __init__(
        self,
        *,
        signer: TokenSigner | None = None,
        sts: StsProvider | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.signer = signer
        self.sts = sts
        self.clock = clock
        self._aws: dict[AssumeRequest, AwsCredentials] = {}
        self._flights: dict[AssumeRequest, asyncio.Future[AwsCredentials]] = {}
        self._failed_at: dict[AssumeRequest, float] = {}

    def for_environment(self, spec: FunctionSpec, env_id: str) -> EnvironmentCredentials | None:
        """What an environment of `spec` is given; None when the function has no Credentials setting."""
        if spec.credentials is None:
            return None
        return EnvironmentCredentials(self, spec, env_id)

    async def aws(self, request: AssumeRequest) -> AwsCredentials:
        """The tenant's AWS credentials: cached until due, then renewed in the background while the cached
        ones are handed out (no call waits for STS while they last); StsError when there are none to give."""
        now = self.clock()
        cached = self._aws.get(request)
        if cached is not None and not cached.lease.due(now):
            return cached
        if cached is not None and cached.lease.usable(now):
            if now - self._failed_at.get(request, -RETRY_AFTER_S) >= RETRY_AFTER_S:
                self._flight(request)
            return cached
        return await asyncio.shield(self._flight(request))

    def _flight(self, request: AssumeRequest) -> asyncio.Future[AwsCredentials]:
        flight = self._flights.get(request)
        if flight is None:
            flight = asyncio.ensure_future(self._assume(request))
            self._flights[request] = flight
            flight.add_done_callback(lambda done: self._landed(request, done))
        return flight

    async def _assume(self, request: AssumeRequest) -> AwsCredentials:
        if self.sts is None:
            raise StsError(
                "the function's Credentials setting names Sts, but this server has no STS provider",
                "this server gives no STS credentials",
            )
        return await self.sts.assume(request)

    def _landed(self, request: AssumeRequest, flight: asyncio.Future[AwsCredentials]) -> None:
        self._flights.pop(request, None)
        if flight.cancelled():
            return
        failure = flight.exception()  # (retrieved: a waiter is told of it itself)
        if failure is not None:
            self._failed_at[request] = self.clock()
            cached = self._aws.get(request)
            if cached is not None and cached.lease.usable(self.clock()):
                log.warning("%s; the tenant's current credentials are handed out until they end", failure)
            return
        if len(self._aws) >= PRUNE_ABOVE:
            now = self.clock()
            for key in [k for k, v in self._aws.items() if not v.lease.usable(now)]:
                del self._aws[key]
                self._failed_at.pop(key, None)
        self._failed_at.pop(request, None)
        self._aws[request] = flight.result()


class EnvironmentCredentials:
    """The credentials of one environment: nothing until it is bound, then its tenant's alone."""

    def __init__(self, vendor: CredentialVendor, spec: FunctionSpec, env_id: str) -> None:
        assert spec.credentials is not None  # for_environment() checks
        self._vendor = vendor
        self._spec = spec
        self._setting = spec.credentials
        self.env_id = env_id
        # What the runtime shows in its Authorization header: random, of this environment alone.
        self.authorization = secrets.token_urlsafe(32)
        self._expected = self.authorization.encode()
        self.tenant_id: str | None = None
        self._token: tuple[str, Lease] | None = None

    @property
    def serves_aws(self) -> bool:
        return self._setting.sts_duration_s is not None

    @property
    def serves_token(self) -> bool:
        return self._setting.token_duration_s is not None

    def bind(self, tenant_id: str) -> None:
        """From now on, the credentials of `tenant_id`, for life."""
        if self.tenant_id is not None and self.tenant_id != tenant_id:
            raise ValueError("an environment's credentials never change tenant")
        self.tenant_id = tenant_id

    def authorized(self, presented: bytes | None) -> bool:
        """Whether `presented` (the Authorization header) is this environment's token, in constant time."""
        return presented is not None and hmac.compare_digest(presented, self._expected)

    def _request(self, tenant_id: str) -> AssumeRequest:
        assert self._setting.sts_duration_s is not None
        return AssumeRequest(
            self._spec.function_arn,
            self._spec.role,
            tenant_id,
            self._setting.sts_duration_s,
            self._setting.sts_session_policy,
        )

    async def prepare(self, request_id: str) -> str | None:
        """Before an invocation: the tenant's AWS credentials made sure of, and its tenant token (None when
        the function has none). CredentialsUnavailable when the AWS credentials cannot be had."""
        tenant_id = self.tenant_id
        if tenant_id is None:
            raise errors.PlatformError(f"RequestId: {request_id} Error: an environment bound to no tenant was invoked")
        if self.serves_aws:
            try:
                await self._vendor.aws(self._request(tenant_id))
            except StsError as exc:
                log.error("%s (request %s of function %s)", exc, request_id, self._spec.function_name)
                raise errors.CredentialsUnavailable(
                    f"RequestId: {request_id} Error: {exc.public}, so the function did not run; the server's "
                    "log says why. This tenant's calls fail until it gets them: no call runs without them."
                ) from None
        return self.token() if self.serves_token else None

    def token(self) -> str | None:
        """The environment's tenant token, made anew once half its life has passed."""
        tenant_id = self.tenant_id
        signer = self._vendor.signer
        lifetime = self._setting.token_duration_s
        if tenant_id is None or signer is None or lifetime is None:
            return None
        now = self._vendor.clock()
        if self._token is None or self._token[1].due(now):
            issued = int(now)
            token = signer.sign(
                tenant_id=tenant_id,
                function_arn=self._spec.function_arn,
                environment_id=self.env_id,
                audience=self._setting.token_audience or DEFAULT_AUDIENCE,
                issued_at=issued,
                lifetime_s=lifetime,
            )
            self._token = (token, Lease(issued, issued + lifetime))
        return self._token[0]

    async def answer(self, kind: Kind) -> tuple[int, bytes]:
        """What the Runtime API answers an authorized GET of the credentials (`aws`) or the tenant token."""
        tenant_id = self.tenant_id
        if tenant_id is None:
            return 404, _error(
                "this environment is bound to no tenant yet (a stem's init runs for nobody): its credentials are "
                "served from its first invocation on",
                "NotBound",
            )
        if kind == "token":
            token = self.token()
            if token is None or self._token is None:
                return 404, _error("the function's Credentials setting has no Token provider", "NoCredentials")
            expiry = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self._token[1].expires_at))
            return 200, json.dumps({"Token": token, "Expiration": expiry}).encode()
        if not self.serves_aws:
            return 404, _error("the function's Credentials setting has no Sts provider", "NoCredentials")
        try:
            creds = await self._vendor.aws(self._request(tenant_id))
        except StsError as exc:
            log.error("%s (environment %s of function %s)", exc, self.env_id, self._spec.function_name)
            return 502, _error(f"{exc.public}; the server's log says why", "CredentialsUnavailable")
        return 200, json.dumps(creds.container_document()).encode()


def _error(message: str, error_type: str) -> bytes:
    return json.dumps({"errorMessage": message, "errorType": error_type}).encode()
