"""The sentry's driver (node.verify.play) under trio's mock clock: answers stamped on arrival,
silence fails at the deadline, a slow replay never makes an honest worker late, and a cheat
stops the replays at the first failing segment."""

from __future__ import annotations

import trio
import trio.testing

from consensus.verify import game as g
from consensus.verify.messages import ChallengeResponse
from node.verify.play import play
from tests.unit.verify.factories import Run, att_id, honest

DEADLINE_MS = 5000


def now() -> int:
    return int(trio.current_time() * 1000)


def new_game(run: Run, sampled: list[int]) -> g.Game:
    return g.Game(run.attestation(), att_id(run), sampled, now() + DEADLINE_MS, True, 0)


class Worker:
    def __init__(self, run: Run, delay_s: float = 0.1, silent: frozenset[int] = frozenset()):
        self.run, self.delay_s, self.silent = run, delay_s, silent

    async def ask(self, index: int) -> ChallengeResponse | None:
        await trio.sleep(self.delay_s)
        if index in self.silent:
            await trio.sleep_forever()
        return self.run.answer(index)


class Replayer:
    def __init__(self, run: Run, delay_s: float = 60.0, wrong: frozenset[int] = frozenset()):
        self.run, self.delay_s, self.wrong, self.done = run, delay_s, wrong, []

    async def replay(
        self, index: int, start: bytes, end: bytes, stop: int = 0
    ) -> tuple[bytes, int | None]:
        await trio.sleep(self.delay_s)  # slower than the deadline: the sentry's own cost
        self.done.append(index)
        return (b"x" * 32 if index in self.wrong else self.run.hashes[index]), None


async def test_honest_passes_though_replays_outlast_the_deadline(autojump_clock: object) -> None:
    run = honest(10)
    replayer = Replayer(run)
    decision = await play(new_game(run, [2, 5, 9]), Worker(run).ask, replayer.replay, now)
    assert isinstance(decision, g.Decide) and decision.passed
    assert sorted(replayer.done) == [2, 5, 9]


async def test_silence_fails_at_the_deadline(autojump_clock: object) -> None:
    run = honest(10)
    started = now()
    worker = Worker(run, silent=frozenset({5}))
    decision = await play(new_game(run, [2, 5, 9]), worker.ask, Replayer(run).replay, now)
    assert isinstance(decision, g.Decide) and not decision.passed
    assert "no answer before the deadline" in decision.reason
    assert now() - started < DEADLINE_MS + 3 * 60_000


async def test_a_late_worker_fails(autojump_clock: object) -> None:
    run = honest(4)
    worker = Worker(run, delay_s=DEADLINE_MS / 1000 + 1)
    decision = await play(new_game(run, [3]), worker.ask, Replayer(run).replay, now)
    assert isinstance(decision, g.Decide) and not decision.passed


async def test_a_cheat_stops_the_replays_early(autojump_clock: object) -> None:
    run = honest(20)
    sampled = list(range(20))
    replayer = Replayer(run, wrong=frozenset(range(20)))
    decision = await play(new_game(run, sampled), Worker(run).ask, replayer.replay, now)
    assert isinstance(decision, g.Decide) and not decision.passed
    assert len(replayer.done) == 2, "the first failing replay, confirmed, decides"
    assert len(set(replayer.done)) == 1, "both replays of the one segment"
