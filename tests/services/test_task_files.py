"""node.market.file_expiry: the sweep over real sealed blobs, keyring and sqlite tables."""

from __future__ import annotations

import os
from pathlib import Path

import msgpack

from consensus.kinds import to_wire
from consensus.market.messages import BlobRef
from node.market.file_expiry import FINAL_JOBS, TaskFiles
from node.market.worker import ENDED
from node.network import now_ms
from tests.services.memnet import Hub
from tests.services.sim import SimNode, make_node

DAY_S = 86_400


async def sealed(node: SimNode, tmp_path: Path, name: str, age_s: int = 0) -> BlobRef:
    """A task file held by ``node``, last used ``age_s`` ago."""
    (tmp_path / name).write_bytes(name.encode() * 100)
    ref = await node.share.put(tmp_path / name)
    then = now_ms() / 1000 - age_s
    os.utime(node.share.keyring.root / ref.hash.hex(), (then, then))
    return ref


def held(node: SimNode, ref: BlobRef) -> bool:
    """Key, ciphertext and plaintext all here (looked at without marking the file used)."""
    entry = node.share.keyring.get(ref.hash.hex())
    return (
        entry is not None
        and node.share.store.has(ref.hash.hex())
        and node.share.store.has(entry[1])
    )


def files_of(node: SimNode) -> TaskFiles:
    return TaskFiles(node.share.keyring, node.share.store, node.store)


async def add_job(node: SimNode, job_id: bytes, inputs: BlobRef, state: str, age_s: int) -> None:
    row = {"job_id": job_id, "name": "j", "spec": "{}", "inputs": msgpack.packb(to_wire(inputs)),
           "inputs_size": inputs.size, "deadline_ms": now_ms()}  # fmt: skip
    await node.store.insert_job(row, 1, now_ms() - age_s * 1000)
    await node.db.execute("UPDATE jobs SET state = ? WHERE job_id = ?", (state, job_id))


async def test_a_requester_keeps_results_and_open_jobs_inputs(tmp_path: Path) -> None:
    node = await make_node(Hub(), tmp_path / "r", "r")
    done_inputs = await sealed(node, tmp_path, "done-inputs", 30 * DAY_S)
    open_inputs = await sealed(node, tmp_path, "open-inputs", 30 * DAY_S)
    result = await sealed(node, tmp_path, "result", 30 * DAY_S)
    old_checkpoint = await sealed(node, tmp_path, "old-checkpoint", 30 * DAY_S)
    open_checkpoint = await sealed(node, tmp_path, "open-job's-checkpoint", 15 * DAY_S)
    await add_job(node, b"d" * 32, done_inputs, FINAL_JOBS[0], age_s=30 * DAY_S)
    await add_job(node, b"o" * 32, open_inputs, "running", age_s=20 * DAY_S)
    await node.db.execute(
        "UPDATE tasks SET result = ? WHERE job_id = ?", (msgpack.packb(to_wire(result)), b"d" * 32)
    )

    assert await files_of(node).sweep(keep_ms=DAY_S * 1000) == (2, 3)
    assert not held(node, done_inputs) and not held(node, old_checkpoint)
    # the open job began 20 days ago: a checkpoint used since may serve its failover
    assert held(node, open_inputs) and held(node, result) and held(node, open_checkpoint)
    assert not node.share.store.has(old_checkpoint.hash.hex())  # the ciphertext went too
    assert len(list(node.share.keyring.root.iterdir())) == 3


async def test_a_worker_keeps_what_a_running_task_may_still_attest(tmp_path: Path) -> None:
    node = await make_node(Hub(), tmp_path / "w", "w")
    early = await sealed(node, tmp_path, "first-checkpoint", 10 * DAY_S)
    stale = await sealed(node, tmp_path, "last-week's-result", 10 * DAY_S + 60)
    started = now_ms() - 10 * DAY_S * 1000 - 1000
    await node.db.execute(
        "INSERT INTO work(job_id, idx, attempt, requester, ord, state, revision, started_ms, "
        "updated_ms) VALUES (?, 0, 0, 'r', x'', 'running', 0, ?, ?)",
        (b"j" * 32, started, started),
    )
    assert await files_of(node).sweep(keep_ms=DAY_S * 1000) == (1, 1)
    assert held(node, early) and not held(node, stale)
    await node.db.execute("UPDATE work SET state = ?", (ENDED[0],))
    assert await files_of(node).sweep(keep_ms=DAY_S * 1000) == (1, 0)
    assert not held(node, early)


async def test_a_file_used_during_the_sweep_stays_and_a_shared_plaintext_too(
    tmp_path: Path,
) -> None:
    node = await make_node(Hub(), tmp_path / "s", "s")
    old = await sealed(node, tmp_path, "same", 30 * DAY_S)
    twin = await sealed(node, tmp_path, "same", 0)  # sealed again under another key
    assert old.hash != twin.hash
    assert await files_of(node).sweep(keep_ms=DAY_S * 1000) == (1, 1)
    assert not held(node, old) and held(node, twin)  # the plaintext both name stayed

    files = files_of(node)
    in_use_now = [f for f in node.share.keyring.entries() if f.sealed == twin.hash.hex()]
    # the rule saw it idle, but it was read since: the check just before deleting keeps it
    assert files._delete(in_use_now, in_use_now, unused_since=0) == (0, 0)
    assert held(node, twin)


async def test_a_stored_file_no_key_names_goes_once_old(tmp_path: Path) -> None:
    node = await make_node(Hub(), tmp_path / "n", "n")
    store = node.share.store
    kept = await sealed(node, tmp_path, "kept", 0)
    keyless_old, keyless_new = store.put(b"a holder lied about its key"), store.put(b"fetching")
    then = now_ms() / 1000 - 2 * DAY_S
    os.utime(store.path(keyless_old), (then, then))
    assert await files_of(node).sweep(keep_ms=DAY_S * 1000) == (1, 1)
    assert not store.has(keyless_old)
    assert store.has(keyless_new) and held(node, kept)
