"""A sentry's QoS probe of a worker: the seeded benchmark, split so that only the product is timed.

``prepare(seed, size)`` draws the two input matrices from the seed (NumPy's PCG64, the same
numbers on every machine) and moves them to the device; that costs O(n^2) and is not timed.
``Prepared.go(scale_seed)`` is the timed part: it scales A's columns by a vector drawn from a
second seed the sentry sends only now (so nothing useful can be computed ahead: knowing A and
B, ``A diag(u) B`` is still a full product), multiplies in fp32, and returns every row's sum
of squares. Those n numbers commit the worker to the whole product: the sentry recomputes a
few sampled rows in float64 (:func:`row_sums`) and compares within :data:`SUM_TOLERANCE`.
Sums of squares are not linear in the product, so they cannot be had from a cheaper
matrix-vector trick, and an fp32 run lands within 2e-7 of float64 while bf16, fp16 or TF32
arithmetic misses by 1e-5 or more.

PyTorch does the work where installed (on the GPU where there is one), NumPy otherwise, as for
``idlegrid gpu bench``, whose score the worker claims.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from gpu.bench import BenchUnavailable

SUM_TOLERANCE = 2e-6  # relative; fp32 products measured within 2.2e-7 of float64 (n 256..2048)
BLOCK_ROWS = 1024  # the sentry converts B to float64 this many rows at a time


def _numpy() -> Any:
    try:
        import numpy as np  # noqa: PLC0415 - optional
    except ImportError:
        raise BenchUnavailable("the QoS probe needs NumPy: pip install '.[torch]'") from None
    return np


def _torch() -> Any | None:
    try:
        import torch  # noqa: PLC0415 - optional, heavy
    except ImportError:
        return None
    return torch


def inputs(seed: int, size: int) -> tuple[Any, Any]:
    """The probe's matrices A and B (fp32, NumPy), entries uniform in [-0.5, 0.5)."""
    np = _numpy()
    rng = np.random.Generator(np.random.PCG64(seed))
    a = rng.random((size, size), dtype=np.float32) - np.float32(0.5)
    b = rng.random((size, size), dtype=np.float32) - np.float32(0.5)
    return a, b


def scales(scale_seed: int, size: int) -> Any:
    """The column scales u (fp32 in [0.5, 1.5)) the timed step applies to A."""
    np = _numpy()
    return np.random.Generator(np.random.PCG64(scale_seed)).random(size, dtype=np.float32) + (
        np.float32(0.5)
    )


@dataclass
class Prepared:
    """Inputs ready on the device, with buffers allocated, waiting for the timed step."""

    size: int
    backend: str  # "torch" or "numpy"
    device: str
    a: Any
    b: Any
    scaled: Any
    product: Any

    def go(self, scale_seed: int) -> tuple[bytes, int]:
        """The timed step: row sums of squares of ``(A diag(u)) B`` as n little-endian fp32,
        and the milliseconds the work took here (the worker's own account)."""
        started = time.perf_counter()
        u = scales(scale_seed, self.size)
        if self.backend == "torch":
            torch = _torch()
            assert torch is not None
            torch.mul(self.a, torch.from_numpy(u).to(self.device), out=self.scaled)
            torch.matmul(self.scaled, self.b, out=self.product)
            sums = self.product.square_().sum(dim=1).cpu().numpy()
        else:
            np = _numpy()
            np.multiply(self.a, u, out=self.scaled)
            np.matmul(self.scaled, self.b, out=self.product)
            sums = np.square(self.product, out=self.product).sum(axis=1, dtype=np.float32)
        raw = sums.astype("<f4").tobytes()
        return raw, round((time.perf_counter() - started) * 1000)


def prepare(seed: int, size: int) -> Prepared:
    """Draws the inputs, moves them to the device and warms the matmul up (all untimed).

    Raises:
        BenchUnavailable: neither PyTorch nor NumPy is installed.
    """
    a, b = inputs(seed, size)
    torch = _torch()
    if torch is None:
        np = _numpy()
        np.matmul(a[:64], b[:, :64])  # wakes BLAS threads
        return Prepared(size, "numpy", "cpu", a, b, np.empty_like(a), np.empty_like(a))
    device = "cuda:0" if torch.cuda.is_available() else "cpu"
    ta, tb = torch.from_numpy(a).to(device), torch.from_numpy(b).to(device)
    prepared = Prepared(size, "torch", device, ta, tb, torch.empty_like(ta), torch.empty_like(ta))
    torch.matmul(ta[:256], tb, out=prepared.product[:256])  # wakes threads / CUDA kernels
    if device != "cpu":
        torch.cuda.synchronize()
    return prepared


def row_sums(seed: int, size: int, scale_seed: int, rows: list[int]) -> dict[int, float]:
    """The sentry's side: the exact (float64) sums of squares of the sampled ``rows``."""
    np = _numpy()
    a, b = inputs(seed, size)
    u = scales(scale_seed, size).astype(np.float64)
    picked = a[rows].astype(np.float64) * u
    product = np.zeros((len(rows), size))
    for start in range(0, size, BLOCK_ROWS):  # B in float64 whole would double its memory
        block = b[start : start + BLOCK_ROWS].astype(np.float64)
        product += picked[:, start : start + BLOCK_ROWS] @ block
    sums = np.square(product).sum(axis=1)
    return {row: float(value) for row, value in zip(rows, sums, strict=True)}


def sums_ok(answer: bytes, size: int, expected: dict[int, float]) -> str:
    """Why the worker's row sums fail the sampled rows, or ``""``."""
    np = _numpy()
    if len(answer) != 4 * size:
        return f"{len(answer)} bytes of row sums, expected {4 * size}"
    claimed = np.frombuffer(answer, dtype="<f4")
    for row, exact in expected.items():
        got = float(claimed[row])
        if not abs(got - exact) <= SUM_TOLERANCE * exact:  # also refuses NaN
            return f"row {row}: sum of squares {got:.9g}, expected {exact:.9g}"
    return ""
