from __future__ import annotations

import pytest

from silo import errors
from silo.api.invoke import check_json, check_tenant
from silo.types import FunctionSpec
from tests.support import function_spec


def spec(per_tenant: bool) -> FunctionSpec:
    return function_spec(per_tenant=per_tenant)


@pytest.mark.parametrize("tenant", ["a", "A-b_c.d:e/f=g+h@i j", "x" * 256, "0"])
def test_valid_tenant_ids_pass(tenant: str) -> None:
    check_tenant(spec(True), tenant)


@pytest.mark.parametrize("tenant", ["", "x" * 257, "a;b", "a*b", "ü", "a\tb", "a\nb", "a,b"])
def test_invalid_tenant_ids_are_refused(tenant: str) -> None:
    with pytest.raises(errors.InvalidParameterValueException, match="tenantId"):
        check_tenant(spec(True), tenant)


@pytest.mark.parametrize("tenant", ["+ ", "a ", " a", " "])
def test_tenant_ids_with_a_space_at_an_end_are_refused(tenant: str) -> None:
    # Found by tests/fuzz/test_fuzz_names.py: '+ ' was routed as '+ ' while the runtime was told '+'.
    with pytest.raises(errors.InvalidParameterValueException, match="begins or ends with a space"):
        check_tenant(spec(True), tenant)


def test_isolated_function_needs_a_tenant() -> None:
    with pytest.raises(errors.InvalidParameterValueException, match="PER_TENANT"):
        check_tenant(spec(True), None)


def test_shared_function_refuses_a_tenant() -> None:
    check_tenant(spec(False), None)
    with pytest.raises(errors.InvalidParameterValueException, match="does not have tenant isolation"):
        check_tenant(spec(False), "a")


def test_payload_must_be_json() -> None:
    check_json(b'{"a": [1]}')
    check_json(b'"text"')
    for bad in (b"{", b"\x99", b"nope"):
        with pytest.raises(errors.InvalidRequestContentException):
            check_json(bad)
