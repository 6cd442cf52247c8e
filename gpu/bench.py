"""The onboarding benchmark: what matters for pricing, as a challenge a sentry can repeat.

A challenger's ``seed`` fixes the inputs: two square matrices drawn from a seeded generator.
The run measures dense matmul throughput (fp32; fp16 and bf16 on GPUs that have them), memory
bandwidth (a large device-to-device copy) and, on a GPU, host-to-device copies from pinned
memory. The ``proof`` is BLAKE3 over the fp32 product of the seeded inputs: a sentry holding the
same seed recomputes it (bitwise within a determinism class; across classes it spot-checks
entries, :func:`check_entries`), so a worker cannot claim a run it did not do, and the sentry
times its own challenge to check the claimed speed.

PyTorch does the work where installed; NumPy otherwise (CPU only). The score is fp32 GFLOPS
scaled so that :data:`REFERENCE_GFLOPS` scores 1000 (the market's reference worker).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from blake3 import blake3

from consensus.market.spec import REFERENCE_GFLOPS, REFERENCE_SCORE

BENCH_FILE = "bench.json"  # in the node's data dir, written by ``idlegrid gpu bench``
MIN_SECONDS = 0.3  # each measurement repeats until it has run this long


class BenchUnavailable(Exception):
    """Neither PyTorch nor NumPy is installed."""


@dataclass(frozen=True)
class BenchResult:
    seed: int
    size: int  # matrix side
    backend: str  # "torch" or "numpy"
    device: str  # "cpu" or "cuda:0"
    matmul_gflops: dict[str, int] = field(default_factory=dict)  # per precision
    memory_gbps: int = 0  # copy bandwidth, read + write
    h2d_gbps: int | None = None  # host (pinned) to device
    proof: str = ""  # BLAKE3 of the fp32 product, hex
    score: int = 0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _timed(work: Callable[[], Any], sync: Callable[[], None]) -> float:
    """Seconds per call of ``work``, repeated for at least :data:`MIN_SECONDS`."""
    work()
    sync()
    calls, started = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - started) < MIN_SECONDS or calls == 0:
        work()
        sync()
        calls += 1
    return elapsed / calls


def score_of(fp32_gflops: int) -> int:
    return max(1, round(REFERENCE_SCORE * fp32_gflops / REFERENCE_GFLOPS))


def run(seed: int, size: int = 0, copy_mb: int = 256) -> BenchResult:
    """The benchmark with the challenger's ``seed``; ``size`` 0 picks 4096 on GPU, 1024 on CPU.

    Raises:
        BenchUnavailable: no PyTorch and no NumPy.
    """
    try:
        import torch  # noqa: PLC0415 - optional, heavy
    except ImportError:
        return _run_numpy(seed, size or 1024, copy_mb)
    return _run_torch(torch, seed, size, copy_mb)


def _run_torch(torch: Any, seed: int, size: int, copy_mb: int) -> BenchResult:
    cuda = torch.cuda.is_available()
    device = "cuda:0" if cuda else "cpu"
    size = size or (4096 if cuda else 1024)

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    a, b = _torch_inputs(torch, seed, size, device)
    product = (a @ b).cpu().contiguous()
    proof = blake3(product.numpy().tobytes()).hexdigest()
    precisions = {"fp32": torch.float32}
    if cuda:
        precisions["fp16"] = torch.float16
        if torch.cuda.is_bf16_supported():
            precisions["bf16"] = torch.bfloat16
    flops = {}
    for name, dtype in precisions.items():
        flops[name] = round(2 * size**3 / _timed(_matmul(a.to(dtype), b.to(dtype)), sync) / 1e9)
    src = torch.empty(copy_mb * 2**20 // 4, dtype=torch.float32, device=device)
    dst = torch.empty_like(src)
    memory = round(2 * src.nbytes / _timed(lambda: dst.copy_(src), sync) / 1e9)
    h2d = None
    if cuda:
        host = torch.empty(src.numel(), dtype=torch.float32).pin_memory()
        h2d = round(host.nbytes / _timed(lambda: dst.copy_(host, non_blocking=True), sync) / 1e9)
    return BenchResult(seed, size, "torch", device, flops, memory, h2d, proof,
                       score_of(flops["fp32"]))  # fmt: skip


def _matmul(x: Any, y: Any) -> Callable[[], Any]:
    return lambda: x @ y


def _torch_inputs(torch: Any, seed: int, size: int, device: str) -> tuple[Any, Any]:
    """The challenge's matrices: drawn on the CPU so every device gets the same numbers."""
    generator = torch.Generator().manual_seed(seed)
    a = torch.rand(size, size, generator=generator, dtype=torch.float32) - 0.5
    b = torch.rand(size, size, generator=generator, dtype=torch.float32) - 0.5
    return a.to(device), b.to(device)


def _run_numpy(seed: int, size: int, copy_mb: int) -> BenchResult:
    try:
        import numpy as np  # noqa: PLC0415 - optional
    except ImportError:
        raise BenchUnavailable(
            "the benchmark needs PyTorch or NumPy: pip install '.[torch]'"
        ) from None
    rng = np.random.Generator(np.random.PCG64(seed))
    a = (rng.random((size, size), dtype=np.float32) - 0.5).astype(np.float32)
    b = (rng.random((size, size), dtype=np.float32) - 0.5).astype(np.float32)
    proof = blake3(np.ascontiguousarray(a @ b).tobytes()).hexdigest()
    gflops = round(2 * size**3 / _timed(lambda: a @ b, lambda: None) / 1e9)
    src = np.empty(copy_mb * 2**20 // 4, dtype=np.float32)
    dst = np.empty_like(src)
    memory = round(2 * src.nbytes / _timed(lambda: np.copyto(dst, src), lambda: None) / 1e9)
    return BenchResult(seed, size, "numpy", "cpu", {"fp32": gflops}, memory, None, proof,
                       score_of(gflops))  # fmt: skip


def check_entries(seed: int, size: int, rows: dict[int, list[float]], tolerance: float) -> bool:
    """A sentry's cross-class check: claimed product rows against its own float64 dot products.

    Needs PyTorch. ``rows`` maps a row index to the claimed row of the fp32 product.
    """
    import torch  # noqa: PLC0415 - optional, heavy

    a, b = _torch_inputs(torch, seed, size, "cpu")
    for index, claimed in rows.items():
        if len(claimed) != size:
            return False
        exact = (a[index].double() @ b.double()).tolist()
        if any(abs(c - e) > tolerance for c, e in zip(claimed, exact, strict=True)):
            return False
    return True


def saved_score(path: Path) -> int | None:
    """The score of a benchmark saved at ``path`` by ``idlegrid gpu bench``, if any."""
    try:
        score = json.loads(path.read_text(encoding="utf-8"))["score"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return score if isinstance(score, int) and score > 0 else None
