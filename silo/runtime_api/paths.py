"""Paths and header names of the Runtime API, the one contract between silo and a runtime.

They live here and nowhere else in the daemon. The built-in Python runtime cannot import silo, so it
keeps its own copy (silo/runtimes/python/client.py); a unit test holds the two equal.
"""

from __future__ import annotations

API_VERSION = "2018-06-01"

NEXT = f"/{API_VERSION}/runtime/invocation/next"
INVOCATION_PREFIX = f"/{API_VERSION}/runtime/invocation/"
INIT_ERROR = f"/{API_VERSION}/runtime/init/error"
RESPONSE_SUFFIX = "response"
ERROR_SUFFIX = "error"


def response_path(request_id: str) -> str:
    return f"{INVOCATION_PREFIX}{request_id}/{RESPONSE_SUFFIX}"


def error_path(request_id: str) -> str:
    return f"{INVOCATION_PREFIX}{request_id}/{ERROR_SUFFIX}"


# Headers of the GET /next answer. Lambda sets each one only when it has a value.
REQUEST_ID = "Lambda-Runtime-Aws-Request-Id"
DEADLINE_MS = "Lambda-Runtime-Deadline-Ms"
INVOKED_FUNCTION_ARN = "Lambda-Runtime-Invoked-Function-Arn"
TRACE_ID = "Lambda-Runtime-Trace-Id"
CLIENT_CONTEXT = "Lambda-Runtime-Client-Context"
COGNITO_IDENTITY = "Lambda-Runtime-Cognito-Identity"
TENANT_ID = "Lambda-Runtime-Aws-Tenant-Id"

# Header a runtime may set when it posts an error.
FUNCTION_ERROR_TYPE = "Lambda-Runtime-Function-Error-Type"

# silo's own, not Lambda's: the per-tenant credentials of a bound environment (docs/operating.md,
# "Per-tenant credentials"). Each GET needs the environment's AWS_CONTAINER_AUTHORIZATION_TOKEN in its
# Authorization header, as the AWS SDKs' container-credentials provider sends it.
CREDENTIALS = f"/{API_VERSION}/silo/credentials"  # AWS credentials, the container-credentials shape
TENANT_TOKEN = f"/{API_VERSION}/silo/tenant-token"  # the tenant token: {"Token": ..., "Expiration": ...}
# The tenant token, sent with each invocation (GET /next) of a function that has one; the built-in Python
# runtime sets SILO_TENANT_TOKEN from it before the handler runs.
TENANT_TOKEN_HEADER = "Silo-Tenant-Token"
# The tenant's PostgreSQL login ({"PGUSER": ..., "PGPASSWORD": ..., "Expiration": ...}), and the headers that
# bring it with each invocation; the built-in Python runtime sets PGUSER and PGPASSWORD from them.
POSTGRES = f"/{API_VERSION}/silo/postgres"
POSTGRES_USER_HEADER = "Silo-Postgres-User"
POSTGRES_PASSWORD_HEADER = "Silo-Postgres-Password"
