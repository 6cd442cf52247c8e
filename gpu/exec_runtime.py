"""``exec`` workloads: any command over its task directory, run once, in the sandbox.

The checkpoint is the hash of the output tree (sorted names and content hashes). Verification of
an exec task can only re-run it on a sampled basis and compare trees: a weaker guarantee than
the train runtime's per-segment replay, and said so to the requester.
"""

from __future__ import annotations

import signal
from pathlib import Path

import trio

from gpu.runtime import (
    GENESIS,
    OnLog,
    OnSegment,
    RunResult,
    RunSpec,
    SegmentDone,
    UnsafeOutput,
    chain,
    run_logged,
    tree_hash,
)
from gpu.sandbox import Sandbox


def workload_env(spec: RunSpec, gpus: tuple[int, ...]) -> dict[str, str]:
    """The whole environment a workload gets: nothing of the node's own."""
    workload = spec.workload
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "CUDA_VISIBLE_DEVICES": ",".join(str(i) for i in gpus),
        "IDLEGRID_SHARD": str(workload.shard),
        "IDLEGRID_SHARDS": str(workload.shards),
        "IDLEGRID_SEED": str(workload.seed),
        **{f"IDLEGRID_PARAM_{k.upper()}": v for k, v in workload.params.items()},
    }


class ExecRuntime:
    """Runs ``exec`` workloads as one segment in ``sandbox``."""

    kinds = frozenset({"exec"})

    def __init__(self, sandbox: Sandbox) -> None:
        self.sandbox = sandbox

    async def run(
        self, spec: RunSpec, on_segment: OnSegment, on_log: OnLog, gpus: tuple[int, ...] = ()
    ) -> RunResult:
        workload, started = spec.workload, trio.current_time()
        jail = self.sandbox.prepare(workload.command, spec.workdir, workload_env(spec, gpus),
                                    network=workload.network, gpus=gpus,
                                    shared=tuple(workload.datasets))  # fmt: skip
        try:
            code = await run_logged(
                jail.argv, jail.cwd, jail.env, on_log, freezer=spec.freezer, **jail.popen
            )
        except OSError as exc:  # e.g. the sandbox's own program is gone
            return RunResult(False, f"cannot start {jail.argv[0]!r}: {exc.strerror}")
        if code != 0:
            return RunResult(False, exit_reason(code, workload.command[0]))
        try:
            state = await trio.to_thread.run_sync(tree_hash, spec.workdir, workload.outputs)
        except UnsafeOutput as exc:
            return RunResult(False, f"unsafe output: {exc}")
        checkpoint = spec.workdir.parent / f"{spec.workdir.name}.exec-state"
        checkpoint.write_bytes(state)
        seconds = int(trio.current_time() - started)
        try:
            await on_segment(SegmentDone(0, state, chain(GENESIS, state), seconds, checkpoint))
        finally:
            checkpoint.unlink(missing_ok=True)
        return RunResult(True, result_hash=state)


def exit_reason(code: int, program: str) -> str:
    """A failed run in words: killed by a signal (a limit, or stopped), or an exit code.

    Through bwrap a signal shows as 128 + its number, the shell convention.
    """
    number = -code if code < 0 else code - 128 if code > 128 else 0
    if number:
        try:
            name = signal.Signals(number).name
        except ValueError:
            name = f"signal {number}"
        return f"exit code {code} (killed by {name}: a resource limit, or stopped)"
    if code == 127:
        return f"exit code 127 (is {Path(program).name!r} installed in the sandbox?)"
    return f"exit code {code}"
