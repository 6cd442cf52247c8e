"""A sentry replays in every class it has a device for: its GPUs' and the CPU's."""

from __future__ import annotations

from gpu.devices import Gpu, Profile
from node.verify.devices import ReplayDevices
from node.verify.worker import determinism_class

CPU = determinism_class("cpu")
L4 = determinism_class("l4-24g")


def gpu(index: int, gpu_class: str) -> Gpu:
    return Gpu(index, gpu_class, f"GPU-{index}", gpu_class, 24_000)


def test_a_sentry_with_gpus_replays_in_their_class_on_one_gpu_and_in_the_cpu_class_on_none() -> (
    None
):
    devices = ReplayDevices.of(
        Profile("nvidia", [gpu(0, "t4-16g"), gpu(1, "l4-24g"), gpu(2, "l4-24g")])
    )
    assert devices.classes == {L4, CPU}
    assert devices.gpus(L4) == (1,), "one of the offered class's GPUs"
    assert devices.gpus(CPU) == (), "a CPU worker's task is replayed with no GPU visible"
    other = determinism_class("h100-80g")
    assert not devices.same_class(other)
    assert devices.replay_class(other) == L4 and devices.gpus(other) == (1,)


def test_a_cpu_sentry_replays_in_the_cpu_class_only() -> None:
    devices = ReplayDevices.of(Profile("cpu"))
    assert devices.classes == {CPU}
    assert devices.replay_class(L4) == CPU and devices.gpus(L4) == ()


def test_the_config_override_names_one_class_replayed_on_the_cpu() -> None:
    devices = ReplayDevices.of(Profile("nvidia", [gpu(0, "l4-24g")]), override="test-class")
    assert devices.classes == {"test-class"} and devices.gpus(L4) == ()
