"""How many stems each function version keeps: the pure decisions over plain data, and the pools' state
over a fake clock (every `now` is given) and fake stems."""

from __future__ import annotations

from dataclasses import dataclass

from silo.router.stems import (
    MAX_FAILURES,
    UNMEASURED_MB,
    Demand,
    StemPolicy,
    StemPools,
    plan,
    share_out,
)
from silo.types import EnvState

KEY = ("arn:fn", "$LATEST", "rev1")
POLICY = StemPolicy(per_function=8, memory_share=0.1, quiet_s=300.0)


@dataclass(eq=False)
class Stem:
    state: EnvState = EnvState.STARTING
    revision_id: str = "rev1"


def demand(name: str, rate: float = 0.1, stem_mb: float = 20.0, stems: int = 0, **kw: float) -> Demand:
    return Demand(
        key=(f"arn:{name}", "$LATEST", "r"),
        rate=rate,
        last_new_tenant=kw.get("last", 100.0),
        grow_s=kw.get("grow_s", 0.5),
        stem_mb=stem_mb,
        stems=stems,
    )


def key(name: str) -> tuple[str, str, str]:
    return (f"arn:{name}", "$LATEST", "r")


# The pure decisions.
def test_twenty_large_functions_each_get_a_stem_counted_at_what_a_stem_holds() -> None:
    # 10% of an 18 GiB budget is 1,843 MiB: not one stem of a 2 GB function counted at its MemorySize,
    # but room for twenty idle stems of 20-40 MiB each.
    demands = [demand(f"f{i}", stem_mb=20.0 + i) for i in range(20)]
    targets = share_out(demands, 18432 * 0.1, POLICY, now=101.0)
    assert all(targets[d.key] >= 1 for d in demands), targets


def test_no_stems_for_a_version_without_a_recent_new_tenant() -> None:
    quiet = demand("quiet", rate=0.0, last=0.0)
    assert share_out([quiet], 1000.0, POLICY, now=301.0) == {quiet.key: 0}
    assert share_out([quiet], 1000.0, POLICY, now=299.0) == {quiet.key: 1}, "recent enough: one stem"


def test_the_share_goes_by_rate_of_new_tenants() -> None:
    # Each gets one first; the rest goes where new tenants come fastest (memory per new tenant a second).
    fast, slow = demand("fast", rate=4.0, stem_mb=10, grow_s=2.0), demand("slow", rate=1.0, stem_mb=10, grow_s=2.0)
    targets = share_out([slow, fast], 60.0, POLICY, now=101.0)
    assert targets == {fast.key: 5, slow.key: 1}


def test_what_a_version_does_not_need_goes_to_the_others() -> None:
    fast, slow = demand("fast", rate=20.0, grow_s=1.0), demand("slow", rate=0.1)
    targets = share_out([fast, slow], 10_000.0, POLICY, now=101.0)
    assert targets == {fast.key: 8, slow.key: 1}, "capped per version; a slow one needs only one"


def test_when_the_share_holds_too_few_the_busiest_get_theirs_first() -> None:
    demands = [demand("a", rate=0.1), demand("b", rate=2.0), demand("c", rate=0.5)]
    targets = share_out(demands, 45.0, POLICY, now=101.0)  # room for two stems of 20 MiB
    assert targets == {key("a"): 0, key("b"): 1, key("c"): 1}


def test_a_stem_larger_than_what_is_left_does_not_block_smaller_ones() -> None:
    big, small = demand("big", rate=2.0, stem_mb=300.0), demand("small", rate=0.1, stem_mb=10.0)
    assert share_out([big, small], 100.0, POLICY, now=101.0) == {big.key: 0, small.key: 1}


def test_failing_versions_and_a_policy_of_none_get_no_stems() -> None:
    stopped = Demand(key("x"), 1.0, 100.0, 0.5, 20.0, 0, stopped=True)
    assert share_out([stopped], 1000.0, POLICY, now=101.0) == {stopped.key: 0}
    assert share_out([demand("a")], 1000.0, StemPolicy(per_function=0), now=101.0) == {key("a"): 0}


def test_a_versions_first_stem_grows_before_anyones_second() -> None:
    demands = [demand("a", rate=4.0, grow_s=1.0), demand("b", rate=2.0, grow_s=1.0), demand("c", rate=0.1, stems=1)]
    result = plan(demands, 10_000.0, POLICY, now=101.0)
    assert result.grow[:2] == [key("a"), key("b")], "c has its one"
    assert result.grow.count(key("a")) == 6 and result.grow.count(key("b")) == 3
    assert result.give_back == {}


def test_over_its_target_a_version_gives_stems_back() -> None:
    result = plan([demand("a", rate=0.0, stems=5)], 10_000.0, POLICY, now=101.0)
    assert result.give_back == {key("a"): 4} and result.grow == []


# The pools' state, over a fake clock.
def test_no_stems_before_a_first_new_tenant() -> None:
    assert StemPools(POLICY).plan(10_000, now=0.0).grow == []


def test_a_version_keeps_one_stem_while_it_has_new_tenants_and_gives_it_back_when_they_stop() -> None:
    pools = StemPools(POLICY)
    pools.new_tenant(KEY, 128, now=0.0)
    assert pools.plan(10_000, now=1.0).grow == [KEY]
    pools.add(KEY, Stem(EnvState.STEM))
    assert pools.plan(10_000, now=299.0).give_back == {}, "quiet for less than quiet_s: keeps it"
    assert pools.plan(10_000, now=301.0).give_back == {KEY: 1}, "quiet for longer: gives it back"


def test_stems_given_back_as_new_tenants_slow_down() -> None:
    pools = StemPools(POLICY)
    for i in range(400):  # 40 new tenants a second, stems take 0.1 s to grow: 6 wanted
        pools.new_tenant(KEY, 128, now=i / 40)
    pools.grew(KEY, 0.1, True, held_mb=10.0)
    assert pools.plan(100_000, now=9.99).targets[KEY] == 6
    for _ in range(6):
        pools.add(KEY, Stem(EnvState.STEM))
    pools.new_tenant(KEY, 128, now=15.0)
    assert pools.plan(100_000, now=17.5).give_back == {KEY: 4}, "10 new tenants a second over the last 10 s: 2"
    assert pools.plan(100_000, now=21.0).give_back == {KEY: 5}, "one new tenant in 10 s: one stem"


def test_the_pool_grows_with_the_rate_of_new_tenants_up_to_the_cap() -> None:
    pools = StemPools(POLICY)
    for i in range(40):  # 4 new tenants a second, stems take 0.5 s to grow
        pools.new_tenant(KEY, 128, now=i / 4)
    pools.grew(KEY, 0.5, True, held_mb=10.0)
    assert pools.plan(100_000, now=10.0).targets[KEY] == 3
    for i in range(400):
        pools.new_tenant(KEY, 128, now=10 + i / 40)
    assert pools.plan(100_000, now=19.9).targets[KEY] == 8


def test_until_measured_a_stem_counts_at_an_estimate_then_at_what_it_held() -> None:
    pools = StemPools(POLICY)
    for i in range(400):
        pools.new_tenant(KEY, 2048, now=i / 40)
    share = 2560 * POLICY.memory_share  # 10% of 2,560 MiB
    assert pools.plan(2560, now=9.9).targets[KEY] == int(share // UNMEASURED_MB)
    pools.grew(KEY, 0.5, True, held_mb=40.0)
    assert pools.plan(2560, now=9.9).targets[KEY] == int(share // 40.0)
    pools.grew(KEY, 0.5, True, held_mb=0.0)
    assert pools.plan(2560, now=9.9).targets[KEY] == 8, "never counted at zero: capped, not unbounded"


def test_an_unmeasured_small_function_counts_at_its_memory_size() -> None:
    pools = StemPools(POLICY)
    pools.new_tenant(KEY, 32, now=0.0)
    assert pools.demands(now=0.0)[0].stem_mb == 32


def test_ready_stems_are_taken_first_and_never_twice() -> None:
    pools = StemPools()
    pools.new_tenant(KEY, 128, now=0.0)
    growing, ready = Stem(), Stem(EnvState.STEM)
    pools.add(KEY, growing)
    pools.add(KEY, ready)
    assert pools.take(KEY) is ready
    assert pools.take(KEY) is growing
    assert pools.take(KEY) is None


def test_new_code_makes_the_old_codes_stems_stale() -> None:
    pools = StemPools()
    pools.new_tenant(KEY, 128, now=0.0)
    old = Stem()
    pools.add(KEY, old)
    assert pools.new_tenant(("arn:fn", "$LATEST", "rev2"), 128, now=1.0) == [old]
    assert pools.take(KEY) is None, "a stem of the old code is never taken"
    assert not pools.add(KEY, Stem()), "nor grown"


def test_giving_back_takes_growing_stems_first() -> None:
    pools = StemPools()
    pools.new_tenant(KEY, 128, now=0.0)
    ready, growing = Stem(EnvState.STEM), Stem()
    pools.add(KEY, ready)
    pools.add(KEY, growing)
    assert pools.surplus(KEY, 1) == [growing]
    assert pools.surplus(KEY, 5) == [growing, ready]


def test_repeated_init_failures_stop_the_pool() -> None:
    pools = StemPools()
    pools.new_tenant(KEY, 128, now=0.0)
    for _ in range(MAX_FAILURES):
        pools.grew(KEY, 0.1, False)
    assert pools.plan(10_000, now=1.0).grow == []


def test_a_retired_version_is_forgotten() -> None:
    pools = StemPools()
    pools.new_tenant(KEY, 128, now=0.0)
    pools.forget("arn:fn", "$LATEST")
    assert pools.demands(now=1.0) == []
