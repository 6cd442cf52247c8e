"""Points from a real train run, judged by the sentry's own game and driver.

The worker's side (the runtime's points, the count every segment has, the answers with their
hashes: ``node.verify.play.answer_from``) and the sentry's (the seed's stops, a replay stopped
at one with the real runtime: ``stops_of``, ``stop_step``, ``replay_segment``), with no network
between them (tests/integration covers that with whole segments). A 20-segment job of 200
steps a segment, long enough against its state for the run to keep points; the sentry samples
2 segments plus the final one. An honest run passes; the same run with the point hash a
sampled segment's stop compares against forged fails that segment "at point" (that a forgery
after the stop is missed is the game's, tests/unit/verify/test_points.py).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import trio
from blake3 import blake3

from consensus.market.messages import TaskRef, Workload
from consensus.verify import game as g
from consensus.verify import tree
from consensus.verify.messages import Attestation, attestation_id
from consensus.verify.sampling import common_points, sample
from gpu.runtime import RunSpec, SegmentDone
from gpu.train import TrainRuntime
from node.verify.play import answer_from, play, replay_segment, stop_step, stops_of
from tests.gpu.conftest import needs_bwrap, sandbox

pytest.importorskip("torch", reason="torch is not installed (pip install '.[torch]')")
pytestmark = needs_bwrap

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "train-tiny" / "train.py"
PARAMS = {"lr": "0.01", "hidden": "16", "batch_size": "32", "precision": "fp32"}
WORKLOAD = Workload(kind="train", entry="train.py", steps=4000, segments=20, seed=7, params=PARAMS)
SIZE = 2


class Judged:
    """One honest run's files and points, and the attestation the worker makes of them."""

    def __init__(self, root: Path) -> None:
        self.root, self.files, self.points = root, [], []  # type: ignore[var-annotated]

    async def run(self) -> None:
        async def keep(done: SegmentDone) -> None:
            self.files.append(done.checkpoint.read_bytes())
            self.points.append(list(done.points))

        result = await TrainRuntime(sandbox(), sample=SIZE).run(
            RunSpec("t", WORKLOAD, self.workdir("run")), keep, lambda _line: None
        )
        assert result.ok, result.error

    def workdir(self, name: str) -> Path:
        path = self.root / name
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True)
        shutil.copy(EXAMPLE, path / "train.py")
        return path

    def attestation(self, inner: list[list[bytes]], count: int) -> Attestation:
        hashes = [blake3(f).digest() for f in self.files]
        return Attestation(
            expires_ms=10**13, nonce=b"n" * 16, ref=TaskRef(job_id=b"j" * 16, task=0, attempt=0),
            worker="w", root=tree.root(tree.chain_leaves(hashes, points=inner)),
            segments=len(hashes), result_hash=hashes[-1], seconds=1, runtime="train",
            det_class="cpu", workload=WORKLOAD, points=count,
        )  # fmt: skip

    async def judge(self, inner: list[list[bytes]], count: int) -> tuple[g.Decide, dict[int, int]]:
        """The sentry's game over a seed that stops the first sampled segment inside it."""
        att = self.attestation(inner, count)
        att_id = attestation_id(att)
        hashes = [blake3(f).digest() for f in self.files]
        seed = next(s for s in (bytes([i]) * 32 for i in range(256)) if _inside(att, s))
        sampled = sample(seed, att.segments, SIZE)
        stops = stops_of(att, seed, sampled)
        game = g.Game(att, att_id, sampled, 10**13, True, 1000, stops)

        async def ask(index: int) -> object:
            return answer_from(att, hashes, self.files.__getitem__, index, points=inner)

        async def replay(index: int, start: bytes, end: bytes, stop: int) -> tuple[bytes, None]:
            spec = RunSpec("t", WORKLOAD, self.workdir(f"replay-{index}"))
            got, _ = await replay_segment(TrainRuntime(sandbox()), spec, index, start,
                                          lambda _line: None,
                                          stop_step=stop_step(att, index, stop))  # fmt: skip
            return got, None

        decision = await play(game, ask, replay, lambda: 0)  # type: ignore[arg-type]
        assert isinstance(decision, g.Decide)
        return decision, stops


def _inside(att: Attestation, seed: bytes) -> bool:
    stops = stops_of(att, seed, sample(seed, att.segments, SIZE))
    first = min(stops)
    return 0 < stops[first] < att.points


async def test_a_real_runs_points_pass_and_a_forged_one_fails_at_its_point(
    tmp_path: Path,
) -> None:
    run = Judged(tmp_path)
    with trio.fail_after(240):
        await run.run()
        count, inner = common_points(run.points)
        assert count > 1, run.points[:2]  # long segments: the run kept points
        decision, stops = await run.judge(inner, count)
        assert decision.passed, decision.reason
        first = min(stops)
        stop = stops[first]
        forged = [list(p) for p in inner]  # forged from the stop's point on
        forged[first][stop - 1] = bytes(32)
        decision, _ = await run.judge(forged, count)
        assert not decision.passed and decision.grounds == "replay"
        assert f"segment {first} at point {stop} of {count}" in decision.reason
