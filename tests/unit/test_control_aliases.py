"""Aliases below the API: which version a call through a weighted alias runs, and Lambda's rules for
RoutingConfig (silo.control.aliases)."""

from __future__ import annotations

import random

import pytest

from silo.control import aliases
from silo.errors import InvalidParameterValueException, ValidationException
from silo.store.aliases import AliasRecord


def alias(weights: dict[str, float], version: str = "1") -> AliasRecord:
    return AliasRecord("f", "live", version, "", weights, "r")


def test_random_picks_land_on_the_weights() -> None:
    draws = random.Random(7)
    for weight in (0.0, 0.05, 0.3, 0.5, 0.97, 1.0):
        record = alias({"2": weight})
        picks = [aliases.pick(record, draws.random()) for _ in range(100_000)]
        # 100,000 draws: the standard deviation of the share is at most 0.0016.
        assert abs(picks.count("2") / len(picks) - weight) < 0.008, weight
        assert set(picks) <= {"1", "2"}


def test_tenants_spread_over_the_weights_and_each_stays_put() -> None:
    record = alias({"2": 0.25})
    points = {f"tenant-{i}": aliases.tenant_point("f", "live", f"tenant-{i}") for i in range(100_000)}
    assert all(0.0 <= p < 1.0 for p in points.values())
    picks = {t: aliases.pick(record, p) for t, p in points.items()}
    assert abs(list(picks.values()).count("2") / len(picks) - 0.25) < 0.008
    # The same tenant, the same point, call after call.
    assert all(aliases.tenant_point("f", "live", t) == p for t, p in list(points.items())[:1000])


def test_raising_a_weight_only_moves_tenants_onto_the_additional_version() -> None:
    tenants = [f"t{i}" for i in range(10_000)]
    before = {t: aliases.pick(alias({"2": 0.2}), aliases.tenant_point("f", "live", t)) for t in tenants}
    after = {t: aliases.pick(alias({"2": 0.6}), aliases.tenant_point("f", "live", t)) for t in tenants}
    assert all(after[t] == "2" for t in tenants if before[t] == "2")
    assert sum(1 for t in tenants if before[t] != after[t]) > 3000


def test_aliases_spread_tenants_independently() -> None:
    tenants = [f"t{i}" for i in range(10_000)]
    canary = {t for t in tenants if aliases.tenant_point("f", "a", t) < 0.5}
    other = {t for t in tenants if aliases.tenant_point("f", "b", t) < 0.5}
    # Independent halves overlap by about a quarter of the tenants, not by all of them.
    assert 2200 < len(canary & other) < 2800


def test_an_alias_without_weights_runs_its_version() -> None:
    assert aliases.pick(alias({}), 0.0) == "1"
    assert aliases.pick(alias({}, "$LATEST"), 0.99) == "$LATEST"


@pytest.mark.parametrize(
    ("body", "error", "text"),
    [
        ({"Name": "a", "FunctionVersion": "1", "RoutingConfig": {"AdditionalVersionWeights": {"2": -1}}},
         ValidationException, "Value '{2=-1.0}' at 'routingConfig.additionalVersionWeights'"),
        ({"Name": "a", "FunctionVersion": "1", "RoutingConfig": {"AdditionalVersionWeights": {"x": 0.5}}},
         ValidationException, "Map keys must satisfy constraint"),
        ({"Name": "123", "FunctionVersion": "1"}, ValidationException, "Value '123' at 'name'"),
        ({"Name": "a", "FunctionVersion": "latest"}, ValidationException, "at 'functionVersion'"),
        ({"FunctionVersion": "1"}, ValidationException, "Value 'null' at 'name'"),
    ],
)  # fmt: skip
def test_alias_requests_are_checked_against_the_model(body: dict[str, object], error: type, text: str) -> None:
    with pytest.raises(error) as info:
        aliases.alias_request(body, creating=True)
    assert text in info.value.message


def test_routing_rules() -> None:
    aliases.check_routing("1", {"2": 0.5})
    with pytest.raises(InvalidParameterValueException, match="cannot be greater than 1"):
        aliases.check_routing("1", {"2": 0.5, "3": 0.1})
    with pytest.raises(InvalidParameterValueException, match="already included in routing configuration"):
        aliases.check_routing("1", {"1": 0.5})
    with pytest.raises(InvalidParameterValueException) as info:
        aliases.check_routing("$LATEST", {"1": 0.5})
    assert info.value.body() == {"message": "$LATEST is not supported for an alias pointing to more than 1 version"}
