from __future__ import annotations

from dataclasses import dataclass

from silo.router.stems import MAX_FAILURES, StemPolicy, StemPools
from silo.types import EnvState

KEY = ("arn:fn", "$LATEST", "rev1")


@dataclass(eq=False)
class Stem:
    state: EnvState = EnvState.STARTING
    revision_id: str = "rev1"


def test_no_stems_before_a_first_new_tenant() -> None:
    assert StemPools().wanted(KEY, 128, 10_000, now=0.0) == 0


def test_one_stem_at_least_once_the_function_had_a_new_tenant() -> None:
    pools = StemPools()
    pools.new_tenant("arn:fn", now=0.0)
    assert pools.wanted(KEY, 128, 10_000, now=1.0) == 1
    assert pools.wanted(KEY, 128, 10_000, now=1000.0) == 1, "a quiet function keeps one stem"


def test_pool_grows_with_the_rate_of_new_tenants_up_to_the_cap() -> None:
    pools = StemPools(StemPolicy(per_function=8))
    pools.grew("arn:fn", 0.5, True, KEY)
    for i in range(40):  # 4 new tenants a second, stems take 0.5 s to grow
        pools.new_tenant("arn:fn", now=i / 4)
    assert pools.wanted(KEY, 128, 100_000, now=10.0) == 3
    for i in range(400):
        pools.new_tenant("arn:fn", now=10 + i / 40)
    assert pools.wanted(KEY, 128, 100_000, now=19.9) == 8


def test_stems_stay_within_their_share_of_memory() -> None:
    pools = StemPools(StemPolicy(per_function=8, memory_share=0.1))
    for i in range(400):
        pools.new_tenant("arn:fn", now=i / 40)
    assert pools.wanted(KEY, 128, 2560, now=9.9) == 2  # 10% of 2,560 MB holds two 128 MB stems
    pools.add(KEY, Stem(), 128)
    assert pools.wanted(KEY, 128, 2560, now=9.9) == 1


def test_ready_stems_are_taken_first_and_never_twice() -> None:
    pools = StemPools()
    growing, ready = Stem(), Stem(EnvState.STEM)
    pools.add(KEY, growing, 128)
    pools.add(KEY, ready, 128)
    assert pools.take(KEY) is ready
    assert pools.take(KEY) is growing
    assert pools.take(KEY) is None


def test_repeated_init_failures_stop_the_pool() -> None:
    pools = StemPools()
    pools.new_tenant("arn:fn", now=0.0)
    for _ in range(MAX_FAILURES):
        pools.grew("arn:fn", 0.1, False, KEY)
    assert pools.wanted(KEY, 128, 10_000, now=1.0) == 0
