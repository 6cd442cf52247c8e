"""Checkpoint overhead of the train runtime: canonical serialisation + BLAKE3 against training.

Run: ``.venv/bin/python bench/runtime.py [--hidden 1024] [--steps 400] [--segment-steps 200]``

In one process and one run, on the CPU: an MLP of a few million parameters trained with Adam
for ``--steps`` steps without checkpoints (the baseline), then the same training with a
checkpoint every ``--segment-steps`` steps, written and hashed exactly as the runtime does
(:func:`gpu.train_child.encode_state`, a file write, :func:`gpu.train.file_hash`). The overhead
is the checkpoint time over the baseline's training time; the second run's total is printed
too, as a check (it is noisier: two cores shared with the rest of the machine).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from gpu.train import file_hash
from gpu.train_child import Cursor, deterministic, encode_state, next_batch


def setup(
    hidden: int, seed: int
) -> tuple[nn.Module, torch.optim.Optimizer, tuple[torch.Tensor, torch.Tensor]]:
    deterministic(seed, threads=torch.get_num_threads())
    model = nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, hidden),
                          nn.ReLU(), nn.Linear(hidden, 10))  # fmt: skip
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(seed)
    data = (torch.randn(4096, hidden, generator=generator),
            torch.randint(0, 10, (4096,), generator=generator))  # fmt: skip
    return model, optimizer, data


def train(
    hidden: int, steps: int, segment_steps: int | None, out: Path
) -> tuple[float, float, int]:
    """(seconds training, seconds checkpointing, checkpoint bytes) for one run."""
    model, optimizer, data = setup(hidden, seed=1)
    cursor, training, checkpointing, size = Cursor(), 0.0, 0.0, 0
    for step in range(1, steps + 1):
        started = time.perf_counter()
        inputs, targets = next_batch(data, cursor, 64, seed=1)
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(inputs), targets).backward()
        optimizer.step()
        training += time.perf_counter() - started
        if segment_steps and step % segment_steps == 0:
            started = time.perf_counter()
            blob = encode_state(model, optimizer, cursor, step)
            path = out / f"seg-{step}.ckpt"
            path.write_bytes(blob)
            file_hash(path)
            checkpointing += time.perf_counter() - started
            size = len(blob)
    return training, checkpointing, size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--segment-steps", type=int, default=200)
    args = parser.parse_args()
    params = sum(p.numel() for p in setup(args.hidden, 1)[0].parameters())
    with tempfile.TemporaryDirectory() as tmp:
        train(args.hidden, 20, None, Path(tmp))  # warm-up: allocator, kernels
        base, _, _ = train(args.hidden, args.steps, None, Path(tmp))
        with_train, ckpt, size = train(args.hidden, args.steps, args.segment_steps, Path(tmp))
    checkpoints = args.steps // args.segment_steps
    pct = 100 * ckpt / base
    print(f"model: {params:,} parameters, Adam, batch 64, {torch.get_num_threads()} threads")
    print(f"baseline, no checkpoints:   {base:.2f} s for {args.steps} steps "
          f"({args.steps / base:.1f} steps/s)")  # fmt: skip
    print(f"with a checkpoint every {args.segment_steps} steps: {with_train + ckpt:.2f} s "
          f"({with_train / base:.3f} x baseline training, + {ckpt:.2f} s checkpoints)")  # fmt: skip
    print(f"each checkpoint: {size / 2**20:.1f} MB, {1000 * ckpt / checkpoints:.0f} ms "
          f"(serialise + write + BLAKE3)")  # fmt: skip
    print(f"checkpoint overhead: {pct:.2f} % of training time (target < 2 %)")
    print(
        f"RESULT params={params} segment_steps={args.segment_steps} "
        f"checkpoint_overhead_pct={pct:.2f}"
    )


if __name__ == "__main__":
    main()
