"""docs/openapi.yaml against the server: a valid OpenAPI document that names every route the app
serves and nothing else, with the error codes, throttle reasons and runtimes the code knows."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, cast

import yaml
from openapi_spec_validator import validate
from starlette.routing import Route

from silo import errors
from silo.api import front
from silo.api.function_urls import FunctionUrlEndpoint
from silo.api.gateway import GatewayEndpoint
from silo.api.health import Readiness
from silo.api.invoke import InvokeEndpoint
from silo.api.routes import api_routes
from silo.credentials.tokens import TokenSigner
from silo.router.limits import Reason
from silo.runtimes.catalog import LAMBDA_RUNTIMES

SPEC_PATH = Path(__file__).resolve().parents[2] / "docs" / "openapi.yaml"
METHODS = ("get", "put", "post", "delete", "patch", "options", "head", "trace")


def spec() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(SPEC_PATH.read_text())
    return document


def shape(path: str) -> str:
    """A path with its parameters' names (and Starlette's converters) left out: `/f/{}/x`."""
    return re.sub(r"\{[^}]*\}", "{}", path)


def served() -> set[tuple[str, str]]:
    # The handlers only keep the services they are given, so the table can be built without them.
    nothing = cast(Any, None)
    routes = api_routes(
        nothing,
        nothing,
        nothing,
        nothing,
        InvokeEndpoint(nothing, nothing, nothing),
        Readiness(),
        nothing,
        nothing,
        nothing,
        gateway=GatewayEndpoint(nothing, nothing),
        tokens=TokenSigner(bytes(32), "http://silo.test"),
        function_urls=FunctionUrlEndpoint(nothing, nothing, "000000000000", signed=True),
    )
    out: set[tuple[str, str]] = set()
    for route in routes:
        assert isinstance(route, Route), route
        # Starlette answers HEAD wherever it answers GET; the document leaves HEAD implied.
        out.update((method, shape(route.path)) for method in route.methods or () if method != "HEAD")
    return out


def described() -> set[tuple[str, str]]:
    return {
        (method.upper(), shape(path)) for path, item in spec()["paths"].items() for method in item if method in METHODS
    }


def test_the_document_is_valid_openapi() -> None:
    validate(spec())


def test_every_route_served_is_described() -> None:
    missing = served() - described()
    assert not missing, f"routes the app serves that docs/openapi.yaml does not describe: {sorted(missing)}"


def test_every_operation_described_is_served() -> None:
    extra = described() - served()
    assert not extra, f"operations docs/openapi.yaml describes that the app does not serve: {sorted(extra)}"


def test_operation_ids_are_unique() -> None:
    ids = [item[m]["operationId"] for item in spec()["paths"].values() for m in item if m in METHODS]
    assert len(ids) == len(set(ids))


def _codes(cls: type[errors.LambdaError]) -> set[str]:
    return {cls.code}.union(*(_codes(sub) for sub in cls.__subclasses__()))


def test_error_codes_are_those_of_silo_errors() -> None:
    """Every error class, silo.errors' and the HTTP front's (imported above, so its classes are known)."""
    enum = set(spec()["components"]["headers"]["ErrorType"]["schema"]["enum"])
    assert enum == _codes(errors.LambdaError)


def test_error_responses_are_in_lambdas_shape() -> None:
    document = spec()
    responses = document["components"]["responses"]
    for path, item in document["paths"].items():
        for method in (m for m in item if m in METHODS):
            for status, response in item[method]["responses"].items():
                # `default` is the gateway's: whatever the function answers, in its own shape.
                if status == "default" or int(status) < 400:
                    continue
                name = response.get("$ref", "").rsplit("/", 1)[-1]
                assert name in responses, f"{method.upper()} {path} {status} should use a shared error response"
                body = responses[name]
                assert body["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}
                assert body["headers"]["x-amzn-ErrorType"] == {"$ref": "#/components/headers/ErrorType"}


def test_throttle_reasons_are_the_routers_and_the_fronts() -> None:
    enum = spec()["components"]["schemas"]["Error"]["properties"]["Reason"]["enum"]
    crowded = front.refusal(front.FrontLimits(max_per_address=1), serving=0, from_address=1, address="127.0.0.1")
    assert crowded is not None
    assert set(enum) == {reason.value for reason in Reason} | {crowded.members["Reason"]}


def test_runtimes_are_the_catalogs() -> None:
    assert spec()["components"]["schemas"]["Runtime"]["enum"] == list(LAMBDA_RUNTIMES)
