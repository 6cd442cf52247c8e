"""GPU discovery: NVML read through the real adapter against a fake pynvml, and CPU-only."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import trio
from click.testing import CliRunner

from config import Settings
from config.schema import NodeSettings, P2pSettings
from gpu import nvml as nvml_mod
from gpu.devices import discover, gpu_class
from node import identity
from node.cli import cli
from node.daemon import run_node
from node.home import Home
from tests.gpu.fake_nvml import FakeGpu, FakeNvml

T4 = FakeGpu(name="Tesla T4", uuid="GPU-t4", total_mb=15360, free_mb=15000, cc=(7, 5))


@pytest.mark.parametrize(
    ("name", "vram_mb", "expected"),
    [
        ("NVIDIA GeForce RTX 4090", 24564, "rtx4090-24g"),
        ("NVIDIA H100 80GB HBM3", 81559, "h100-80g"),
        ("NVIDIA A100-SXM4-40GB", 40960, "a100-40g"),
        ("Tesla T4", 15360, "t4-15g"),
        ("NVIDIA GeForce RTX 3080 Ti", 12288, "rtx3080ti-12g"),
        ("NVIDIA RTX A6000", 49140, "rtxa6000-48g"),
        ("NVIDIA H200", 143771, "h200-140g"),
    ],
)
def test_gpu_class_from_model_and_memory(name: str, vram_mb: int, expected: str) -> None:
    assert gpu_class(name, vram_mb) == expected


def test_nvidia_profile_reads_every_field_and_offers_the_commonest_class() -> None:
    fake = FakeNvml([FakeGpu(), T4, FakeGpu(uuid="GPU-b", free_mb=1000, processes=[object()])])
    profile = discover(fake, sysfs=Path("/nonexistent"))
    assert fake.initialised == 0, "nvmlShutdown must follow nvmlInit"
    assert (profile.backend, profile.driver, profile.cuda) == ("nvidia", "550.54.14", "12.4")
    assert profile.offer() == ("rtx4090-24g", 2, 24564)
    assert [g.uuid for g in profile.offered_gpus()] == [FakeGpu().uuid, "GPU-b"]
    first = profile.gpus[0]
    assert (first.vram_total_mb, first.vram_free_mb, first.utilisation_pct) == (24564, 24000, 3)
    assert (first.temperature_c, first.power_w, first.power_limit_w) == (41, 35, 450)
    assert (first.compute_capability, first.pcie) == ("8.9", "gen4 x16 at 00000000:01:00.0")
    assert (first.processes, profile.gpus[2].processes) == (0, 1)
    assert profile.gpus[1].gpu_class == "t4-15g"


def test_unsupported_fields_are_none_not_errors() -> None:
    profile = discover(FakeNvml([FakeGpu(power_mw=None, pcie=None)]), sysfs=Path("/nonexistent"))
    gpu = profile.gpus[0]
    assert (gpu.power_w, gpu.pcie, gpu.power_limit_w) == (None, "", 450)


@pytest.mark.parametrize(
    ("fake", "reason"),
    [
        (FakeNvml([], missing=True), "no NVIDIA driver (NVML: NVML Shared Library Not Found)"),
        (FakeNvml([FakeGpu()], fail_count=True), "NVML failed while reading the GPUs: Unknown"),
        (FakeNvml([]), "NVIDIA driver 550.54.14 reports no GPUs"),
    ],
)
def test_cpu_only_profile_says_why(fake: FakeNvml, reason: str) -> None:
    profile = discover(fake, sysfs=Path("/nonexistent"))
    assert profile.backend == "cpu" and profile.gpus == []
    assert profile.note.startswith("CPU only: " + reason)
    assert profile.offer() == ("cpu", 1, 0)
    assert profile.cpu_cores >= 1 and profile.ram_mb > 0


def test_real_nvml_on_this_machine_never_raises() -> None:
    profile = discover()  # the real pynvml: a GPU machine lists its GPUs, others say why not
    assert profile.backend in ("nvidia", "cpu")
    assert profile.gpus or profile.note.startswith("CPU only: ")


def test_amd_and_intel_cards_are_reported_not_offered(tmp_path: Path) -> None:
    for card, vendor in [("card0", "0x1002"), ("card1", "0x8086"), ("card1-DP-1", "0x1002")]:
        (tmp_path / card / "device").mkdir(parents=True)
        (tmp_path / card / "device" / "vendor").write_text(vendor + "\n")
    profile = discover(FakeNvml([], missing=True), sysfs=tmp_path)
    assert [o.split(" (")[0] for o in profile.others] == ["amd GPU at card0", "intel GPU at card1"]
    assert profile.offer() == ("cpu", 1, 0)


def test_cli_prints_the_profile(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(nvml_mod, "load_pynvml", lambda: FakeNvml([FakeGpu(), FakeGpu()]))
    result = CliRunner().invoke(cli, ["gpu", "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output)
    assert payload["offer"] == {"gpu_class": "rtx4090-24g", "count": 2, "vram_mb": 24564}
    human = CliRunner().invoke(cli, ["gpu"])
    assert "offer     2 x rtx4090-24g, 24 GB each" in human.output
    assert "550.54.14 (CUDA 12.4)" in human.output


def test_cli_cpu_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(nvml_mod, "load_pynvml", lambda: FakeNvml([], missing=True))
    result = CliRunner().invoke(cli, ["gpu"])
    assert result.exit_code == 0, result.output
    assert "offer     1 x cpu" in result.output
    assert "CPU only: no NVIDIA driver" in result.output


async def test_worker_presence_offers_what_discovery_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(nvml_mod, "load_pynvml", lambda: FakeNvml([FakeGpu(), FakeGpu()]))
    home = Home(tmp_path / "home")
    identity.save(home, identity.NodeKeys.generate(), passphrase=None)
    home.ensure_token()
    (home.root / "bench.json").write_text('{"score": 777}')  # as idlegrid gpu bench saves it
    keys = identity.load(home, lambda: None)
    settings = Settings(node=NodeSettings(roles=("worker",)),
                        p2p=P2pSettings(listen=("/ip4/127.0.0.1/tcp/0",)))  # fmt: skip
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            ctx = await nursery.start(run_node, home, settings, keys)
            assert ctx.market is not None and ctx.market.worker is not None
            caps = ctx.market.worker.bidder.caps
            assert (caps.gpu_class, caps.gpus, caps.vram_mb) == ("rtx4090-24g", 2, 24564)
            assert caps.score == 777
            offer = ctx.network._presence(expires_ms=2**40).offers[0]
            assert (offer.gpu_class, offer.count, offer.vram_mb) == ("rtx4090-24g", 2, 24564)
            nursery.cancel_scope.cancel()
