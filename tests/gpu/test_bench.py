"""The benchmark as a challenge: the seed fixes the inputs, the proof commits to the output."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from gpu import bench
from node.cli import cli

torch = pytest.importorskip("torch", reason="torch is not installed (pip install '.[torch]')")


@pytest.fixture(autouse=True)
def quick(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bench, "MIN_SECONDS", 0.01)


def test_same_seed_same_proof_other_seed_other_proof() -> None:
    first, again = bench.run(11, size=256, copy_mb=4), bench.run(11, size=256, copy_mb=4)
    other = bench.run(12, size=256, copy_mb=4)
    assert first.proof == again.proof != other.proof
    assert (first.backend, first.device, first.size) == ("torch", "cpu", 256)
    assert (
        first.matmul_gflops["fp32"] >= 0 and first.h2d_gbps is None
    )  # whole GFLOPS: may round to 0
    assert first.score == bench.score_of(first.matmul_gflops["fp32"]) >= 1


def test_numpy_fallback_is_a_challenge_too() -> None:
    first, again = bench._run_numpy(5, 128, 4), bench._run_numpy(5, 128, 4)
    assert first.backend == "numpy" and first.proof == again.proof
    assert bench._run_numpy(6, 128, 4).proof != first.proof


def test_a_sentry_spot_checks_claimed_rows_across_classes() -> None:
    a, b = bench._torch_inputs(torch, 21, 64, "cpu")
    product = a @ b
    honest = {i: product[i].tolist() for i in (0, 17, 63)}
    assert bench.check_entries(21, 64, honest, tolerance=1e-3)
    forged = {**honest, 17: [v + 0.01 for v in honest[17]]}
    assert not bench.check_entries(21, 64, forged, tolerance=1e-3)
    assert not bench.check_entries(22, 64, honest, tolerance=1e-3), "another seed's challenge"


def test_cli_saves_the_score_for_the_worker(tmp_path: Path) -> None:
    home = str(tmp_path / "node")
    runner = CliRunner()
    assert runner.invoke(cli, ["init", "--home", home]).exit_code == 0
    result = runner.invoke(cli, ["gpu", "bench", "--size", "128", "--seed", "3", "--home", home,
                                 "--json"])  # fmt: skip
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output)
    saved = Path(payload["saved"])
    assert bench.saved_score(saved) == payload["score"] >= 1
    saved.write_text("{not json")
    assert bench.saved_score(saved) is None
