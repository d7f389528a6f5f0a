"""Per-tenant credentials, vended to the environments bound to that tenant and to no other.

`CredentialVendor` keeps what the providers made: AWS credentials per (function, role, tenant) and
PostgreSQL logins per (function, tenant, database, base role), renewed in the background once half their
life has passed (silo.credentials.lifetime), one AssumeRole or role renewal at a time per key however many
environments ask. Each environment holds an `EnvironmentCredentials`: its own random
authorization token (the AWS_CONTAINER_AUTHORIZATION_TOKEN its runtime is started with), its tenant once
it is bound, and its tenant token. Before each invocation `prepare()` makes sure the tenant's credentials
are there (so a call whose credentials cannot be had fails before the function runs, with
CredentialsUnavailable), and the environment's Runtime API serves them through `answer()` to whoever
shows the authorization token. The PostgreSQL login also travels with each invocation (`postgres_login()`,
headers of GET /next that silo's Python runtime sets as PGUSER and PGPASSWORD).

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
from typing import Literal, TypeVar

from silo import errors
from silo.credentials.errors import ProviderError
from silo.credentials.lifetime import Lease
from silo.credentials.postgres import PostgresError, PostgresLogin, PostgresProvider, RoleRequest
from silo.credentials.sts import AssumeRequest, AwsCredentials, StsError, StsProvider
from silo.credentials.tokens import DEFAULT_AUDIENCE, TokenSigner
from silo.types import FunctionSpec

log = logging.getLogger(__name__)

Kind = Literal["aws", "token", "postgres"]
Key = AssumeRequest | RoleRequest
Issued = AwsCredentials | PostgresLogin
T = TypeVar("T", AwsCredentials, PostgresLogin)
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
        postgres: PostgresProvider | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.signer = signer
        self.sts = sts
        self.postgres = postgres
        self.clock = clock
        self._issued: dict[Key, Issued] = {}
        self._flights: dict[Key, asyncio.Future[Issued]] = {}
        self._failed_at: dict[Key, float] = {}

    def for_environment(self, spec: FunctionSpec, env_id: str) -> EnvironmentCredentials | None:
        """What an environment of `spec` is given; None when the function has no Credentials setting."""
        if spec.credentials is None:
            return None
        return EnvironmentCredentials(self, spec, env_id)

    async def aws(self, request: AssumeRequest) -> AwsCredentials:
        """The tenant's AWS credentials: cached until due, then renewed in the background while the cached
        ones are handed out (no call waits for STS while they last); StsError when there are none to give."""
        return await self._get(request, AwsCredentials)

    async def postgres_login(self, request: RoleRequest) -> PostgresLogin:
        """The tenant's PostgreSQL login, as `aws()` keeps AWS credentials; PostgresError when there is none."""
        return await self._get(request, PostgresLogin)

    async def _get(self, request: Key, kind: type[T]) -> T:
        issued = await self._current(request)
        if not isinstance(issued, kind):  # a key's type decides its provider (_issue)
            raise TypeError(f"{type(request).__name__} issued a {type(issued).__name__}")
        return issued

    async def _current(self, request: Key) -> Issued:
        now = self.clock()
        cached = self._issued.get(request)
        if cached is not None and not cached.lease.due(now):
            return cached
        if cached is not None and cached.lease.usable(now):
            if now - self._failed_at.get(request, -RETRY_AFTER_S) >= RETRY_AFTER_S:
                self._flight(request)
            return cached
        return await asyncio.shield(self._flight(request))

    def _flight(self, request: Key) -> asyncio.Future[Issued]:
        flight = self._flights.get(request)
        if flight is None:
            flight = asyncio.ensure_future(self._issue(request))
            self._flights[request] = flight
            flight.add_done_callback(lambda done: self._landed(request, done))
        return flight

    async def _issue(self, request: Key) -> Issued:
        if isinstance(request, RoleRequest):
            if self.postgres is None:
                raise PostgresError(
                    "the function's Credentials setting names Postgres, but this server has no --tenant-db-admin",
                    "this server gives no PostgreSQL credentials",
                )
            return await self.postgres.issue(request)
        if self.sts is None:
            raise StsError(
                "the function's Credentials setting names Sts, but this server has no STS provider",
                "this server gives no STS credentials",
            )
        return await self.sts.assume(request)

    def _landed(self, request: Key, flight: asyncio.Future[Issued]) -> None:
        self._flights.pop(request, None)
        if flight.cancelled():
            return
        failure = flight.exception()  # (retrieved: a waiter is told of it itself)
        if failure is not None:
            self._failed_at[request] = self.clock()
            cached = self._issued.get(request)
            if cached is not None and cached.lease.usable(self.clock()):
                log.warning("%s; the tenant's current credentials are handed out until they end", failure)
            return
        if len(self._issued) >= PRUNE_ABOVE:
            now = self.clock()
            for key in [k for k, v in self._issued.items() if not v.lease.usable(now)]:
                del self._issued[key]
                self._failed_at.pop(key, None)
        self._failed_at.pop(request, None)
        self._issued[request] = flight.result()


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
        self._login: PostgresLogin | None = None

    @property
    def serves_aws(self) -> bool:
        return self._setting.sts_duration_s is not None

    @property
    def serves_token(self) -> bool:
        return self._setting.token_duration_s is not None

    @property
    def serves_postgres(self) -> bool:
        return self._setting.postgres is not None

    @property
    def database(self) -> str | None:
        """The database the tenant's role is made in (PGDATABASE: it names no tenant)."""
        return self._setting.postgres.database if self._setting.postgres is not None else None

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

    def postgres_variables(self) -> tuple[dict[str, str], bool]:
        """libpq's PGHOST, PGPORT and PGDATABASE, set at start (they name no tenant), and whether PGHOST is to be
        the environment's gateway: when its network is outbound and HostServices names the admin DSN's port,
        which the environment reaches there. Nothing when there is no Postgres provider."""
        provider = self._vendor.postgres
        if self._setting.postgres is None or provider is None:
            return {}, False
        host, port = provider.address()
        loopback = host in ("localhost", "127.0.0.1")
        service = f"127.0.0.1:{port}"
        at_gateway = loopback and self._spec.network == "outbound" and service in self._spec.host_services
        variables = {"PGHOST": host, "PGPORT": str(port), "PGDATABASE": self._setting.postgres.database}
        return variables, at_gateway

    def _role_request(self, tenant_id: str) -> RoleRequest:
        setting = self._setting.postgres
        assert setting is not None
        return RoleRequest(
            self._spec.function_arn,
            tenant_id,
            setting.database,
            setting.base_role,
            setting.connection_limit,
            setting.duration_s,
        )

    async def prepare(self, request_id: str) -> str | None:
        """Before an invocation: the tenant's AWS credentials and PostgreSQL login made sure of (the login is
        then `postgres_login()`), and its tenant token (None when the function has none).
        CredentialsUnavailable when the AWS credentials or the login cannot be had."""
        tenant_id = self.tenant_id
        if tenant_id is None:
            raise errors.PlatformError(f"RequestId: {request_id} Error: an environment bound to no tenant was invoked")
        try:
            if self.serves_aws:
                await self._vendor.aws(self._request(tenant_id))
            if self.serves_postgres:
                self._login = await self._vendor.postgres_login(self._role_request(tenant_id))
        except ProviderError as exc:
            log.error("%s (request %s of function %s)", exc, request_id, self._spec.function_name)
            raise errors.CredentialsUnavailable(
                f"RequestId: {request_id} Error: {exc.public}, so the function did not run; the server's "
                "log says why. This tenant's calls fail until it gets them: no call runs without them."
            ) from None
        return self.token() if self.serves_token else None

    def postgres_login(self) -> tuple[str, str] | None:
        """The PostgreSQL user and password `prepare()` made sure of, for the invocation it prepared."""
        login = self._login
        return (login.user, login.password) if login is not None else None

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
        if kind == "postgres":
            if not self.serves_postgres:
                return 404, _error("the function's Credentials setting has no Postgres provider", "NoCredentials")
            try:
                login = await self._vendor.postgres_login(self._role_request(tenant_id))
            except PostgresError as exc:
                log.error("%s (environment %s of function %s)", exc, self.env_id, self._spec.function_name)
                return 502, _error(f"{exc.public}; the server's log says why", "CredentialsUnavailable")
            return 200, json.dumps(login.document()).encode()
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
