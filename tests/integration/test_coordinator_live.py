"""The leader key on a real 3-member etcd: one term at a time, fenced writes refused
to an ended term, resign handing over at once, no quorum reported as unknown."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from hacontrol.core.leadership import DcsAnswer
from hacontrol.io.coordinator import Coordinator
from hacontrol.io.etcd import EtcdClient, EtcdRefused, EtcdUnavailable
from hacontrol.testing import EtcdCluster
from hacontrol.testing.etcd_cluster import EtcdError, find_etcd

try:
    find_etcd()
except EtcdError as missing:
    if os.environ.get("CI"):
        raise  # .ci/run installs etcd-server: missing there is a defect of the run
    pytest.skip(str(missing), allow_module_level=True)

pytestmark = [pytest.mark.integration, pytest.mark.extended, pytest.mark.timeout(90)]

PREFIX = "/hacontrol/test/"
TTL_S = 3.0


@pytest.fixture(scope="module")
def etcd(tmp_path_factory: pytest.TempPathFactory) -> EtcdCluster:  # type: ignore[misc]
    with EtcdCluster(3, base_dir=tmp_path_factory.mktemp("etcd")) as cluster:
        yield cluster


def _coordinator(etcd: EtcdCluster, name: str, prefix: str, timeout_s: float = 1.0) -> Coordinator:
    return Coordinator(EtcdClient(etcd.endpoints, timeout_s=timeout_s), prefix, name, TTL_S)


@pytest.fixture
async def pair(etcd: EtcdCluster, request: pytest.FixtureRequest) -> AsyncIterator[
    tuple[Coordinator, Coordinator]
]:
    prefix = f"{PREFIX}{request.node.name}/"
    a, b = _coordinator(etcd, "ctl-a", prefix), _coordinator(etcd, "ctl-b", prefix)
    try:
        yield a, b
    finally:
        await a.close()
        await b.close()


async def test_exactly_one_campaign_wins_and_the_other_learns_the_leader(
    pair: tuple[Coordinator, Coordinator],
) -> None:
    a, b = pair
    first, second = await asyncio.gather(a.campaign(), b.campaign())
    winners = [c for c in (first, second) if c.epoch is not None]
    assert len(winners) == 1
    assert first.leader == second.leader == winners[0].leader
    assert first.answer is second.answer is DcsAnswer.OK
    # Campaigning again while leading finds the own term: same epoch.
    leader = a if first.epoch is not None else b
    again = await leader.campaign()
    assert again.epoch == winners[0].epoch


async def test_a_term_that_ended_cannot_write_and_the_next_term_has_a_higher_epoch(
    pair: tuple[Coordinator, Coordinator],
) -> None:
    a, b = pair
    won = await a.campaign()
    assert won.epoch is not None
    assert (await a.fenced_write(won.epoch, {"state": b"a1"}))[0] is DcsAnswer.OK
    # a stops renewing (stopped, cut off): its lease expires on etcd's clock.
    deadline = time.monotonic() + TTL_S + 5
    took = None
    started = time.monotonic()
    while time.monotonic() < deadline:
        attempt = await b.campaign()
        if attempt.epoch is not None:
            took = time.monotonic() - started
            break
        assert attempt.leader == "ctl-a"
        await asyncio.sleep(0.1)
    assert took is not None, "ctl-b never won after ctl-a's lease expired"
    assert attempt.epoch is not None and attempt.epoch > won.epoch
    answer, detail = await a.fenced_write(won.epoch, {"state": b"a2"})
    assert answer is DcsAnswer.LOST and "ctl-b" in detail
    assert (await a.keepalive(won.epoch))[0] is DcsAnswer.LOST
    answer, values, _ = await b.read()
    assert answer is DcsAnswer.OK and values["state"] == b"a1"
    assert values["leader"] == b"ctl-b"


async def test_resign_hands_the_term_over_at_once(pair: tuple[Coordinator, Coordinator]) -> None:
    a, b = pair
    won = await a.campaign()
    assert won.epoch is not None
    assert (await b.campaign()).leader == "ctl-a"
    assert (await a.resign(won.epoch))[0] is DcsAnswer.OK
    started = time.monotonic()
    taken = await b.campaign()
    assert taken.epoch is not None and taken.leader == "ctl-b"
    assert time.monotonic() - started < 1.0
    assert (await a.fenced_write(won.epoch, {"x": b"1"}))[0] is DcsAnswer.LOST


async def test_keepalive_keeps_the_term_past_its_ttl(pair: tuple[Coordinator, Coordinator]) -> None:
    a, b = pair
    won = await a.campaign()
    assert won.epoch is not None
    for _ in range(5):  # 5 s, past the 3 s ttl
        assert (await a.keepalive(won.epoch))[0] is DcsAnswer.OK
        await asyncio.sleep(1.0)
    assert (await b.campaign()).leader == "ctl-a"
    assert (await a.fenced_write(won.epoch, {"x": b"1"}))[0] is DcsAnswer.OK


async def test_nothing_answers_is_unknown_not_lost(tmp_path: Path) -> None:
    # No etcd on these ports: every request is unanswered, never "lost".
    client = EtcdClient(["http://127.0.0.1:9", "http://127.0.0.2:9"], timeout_s=0.5)
    c = Coordinator(client, PREFIX, "ctl-a", TTL_S)
    try:
        started = time.monotonic()
        assert (await c.campaign()).answer is DcsAnswer.UNKNOWN
        assert (await c.fenced_write(5, {"x": b"1"}))[0] is DcsAnswer.UNKNOWN
        assert time.monotonic() - started < 3.0
        with pytest.raises(EtcdUnavailable, match="did not answer"):
            await client.get("x")
    finally:
        await c.close()


async def test_without_quorum_a_leader_gets_unknown_and_keeps_its_term_until_it_is_back(
    tmp_path: Path,
) -> None:
    with EtcdCluster(3, base_dir=tmp_path / "etcd") as etcd:
        a = _coordinator(etcd, "ctl-a", PREFIX, timeout_s=1.0)
        try:
            won = await a.campaign()
            assert won.epoch is not None
            etcd.stop_member("e2")
            etcd.stop_member("e3")
            started = time.monotonic()
            answer, detail = await a.fenced_write(won.epoch, {"x": b"1"})
            assert answer is DcsAnswer.UNKNOWN, detail
            assert time.monotonic() - started < 2.5
            assert (await a.keepalive(won.epoch))[0] is DcsAnswer.UNKNOWN
            etcd.start_member("e2")
            ok = None
            for _ in range(50):
                ok, _detail = await a.keepalive(won.epoch)
                if ok is DcsAnswer.OK:
                    break
                await asyncio.sleep(0.2)
            # Back within the ttl plus etcd's own lease extension on a new etcd leader.
            assert ok is DcsAnswer.OK
        finally:
            await a.close()


async def test_a_refusal_is_told_apart_from_no_answer(etcd: EtcdCluster) -> None:
    client = EtcdClient(etcd.endpoints, timeout_s=1.0)
    try:
        with pytest.raises(EtcdRefused) as refused:
            await client.revoke(12345)
        assert refused.value.not_found
    finally:
        await client.close()
