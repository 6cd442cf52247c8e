"""A job that is not deterministic cannot get its honest worker slashed.

A requester's train script that reads ``os.urandom`` in each step gives a different state on
every run. Run honestly by the real train runtime and judged by the sentry's own game and
driver (``node.verify.play.play``, replays by the real runtime in the sandbox), every segment
misses its first replay; the sentry replays it again, its two replays disagree, and the game
ends in a pass that says the job is unverifiable, which backs no slash. (Where the sentry's
two replays agree, a miss still fails: ``tests/gpu/test_points_judged.py``.)
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import trio
from blake3 import blake3

from consensus.market.messages import TaskRef, Workload
from consensus.verify import escalation as esc
from consensus.verify import game as g
from consensus.verify import tree
from consensus.verify.messages import Attestation, attestation_id
from gpu.runtime import RunSpec, SegmentDone
from gpu.train import TrainRuntime
from node.verify.play import answer_from, play, replay_segment
from tests.gpu.conftest import needs_bwrap, sandbox

pytest.importorskip("torch", reason="torch is not installed (pip install '.[torch]')")
pytestmark = needs_bwrap

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "train-tiny" / "train.py"
UNSTEADY = """

import os as _os

_step = step


def step(ctx, model, optimizer, batch):  # the example's step, then a nudge nobody can replay
    loss = _step(ctx, model, optimizer, batch)
    with torch.no_grad():
        model[0].bias.add_(int.from_bytes(_os.urandom(2), "big") * 1e-9)
    return loss
"""
WORKLOAD = Workload(kind="train", entry="train.py", steps=40, segments=2, seed=7,
                    params={"hidden": "8", "batch_size": "16"})  # fmt: skip


def workdir(root: Path, name: str) -> Path:
    path = root / name
    path.mkdir(parents=True)
    shutil.copy(EXAMPLE, path / "train.py")
    with (path / "train.py").open("a") as script:
        script.write(UNSTEADY)
    return path


async def judged(root: Path, files: list[bytes]) -> g.Decide:
    """The sentry's same-class game over every segment of the run whose files are ``files``."""
    hashes = [blake3(f).digest() for f in files]
    att = Attestation(
        expires_ms=10**13, nonce=b"n" * 16, ref=TaskRef(job_id=b"j" * 16, task=0, attempt=0),
        worker="w", root=tree.root(tree.chain_leaves(hashes)), segments=len(hashes),
        result_hash=hashes[-1], seconds=1, runtime="train", det_class="cpu", workload=WORKLOAD,
    )  # fmt: skip
    game = g.Game(att, attestation_id(att), [0, 1], 10**13, True, 1000)
    replays = iter(range(100))

    async def ask(index: int) -> object:
        return answer_from(att, hashes, files.__getitem__, index)

    async def replay(index: int, start: bytes, end: bytes, stop: int) -> tuple[bytes, None]:
        spec = RunSpec("t", WORKLOAD, workdir(root, f"replay-{next(replays)}"))
        got, _ = await replay_segment(TrainRuntime(sandbox()), spec, index, start,
                                      lambda _line: None)  # fmt: skip
        return got, None

    decision = await play(game, ask, replay, lambda: 0)  # type: ignore[arg-type]
    assert isinstance(decision, g.Decide)
    return decision


async def test_an_unsteady_job_is_unverifiable_and_its_honest_worker_not_slashable(
    tmp_path: Path,
) -> None:
    files: list[bytes] = []

    async def keep(done: SegmentDone) -> None:
        files.append(done.checkpoint.read_bytes())

    with trio.fail_after(240):
        result = await TrainRuntime(sandbox(), sample=2).run(
            RunSpec("t", WORKLOAD, workdir(tmp_path, "run")), keep, lambda _line: None
        )
        assert result.ok, result.error
        decision = await judged(tmp_path / "honest", files)
        assert decision.passed and decision.grounds == "unsteady", decision.reason
        assert decision.reason.startswith("unverifiable: the job is not deterministic")
        assert not esc.slashable(decision, same_class=True)
