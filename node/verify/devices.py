"""Where a sentry replays: one determinism class per device it can replay on, and the GPUs a
replay in that class is given.

Why: a replay compares bitwise only in the worker's class (device model, Python, numeric
libraries). A sentry that always replayed on its CPU judged every GPU worker across classes,
so on a network of GPU workers every task went to escalation. A sentry with GPUs replays in
their class, and, by showing a replay no GPU, in the CPU class too.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from gpu.devices import CPU_CLASS, Profile
from node.verify.worker import determinism_class


@dataclass(frozen=True)
class ReplayDevices:
    """Determinism class -> the GPUs a replay in it is given (``()``: the CPU only)."""

    gpus_of: Mapping[str, tuple[int, ...]]
    nearest: str  # the class a replay across classes runs in: the GPUs' (closer), else CPU

    @classmethod
    def of(cls, profile: Profile, override: str = "") -> ReplayDevices:
        """This machine's classes; ``override`` (``verify.det_class``, tests only) replaces
        them with one class replayed on the CPU."""
        if override:
            return cls({override: ()}, override)
        cpu = determinism_class(CPU_CLASS)
        gpus = profile.offered_gpus()
        if not gpus:
            return cls({cpu: ()}, cpu)
        # one GPU per replay: a sampled segment is small, and the others stay free
        own = determinism_class(profile.offer()[0])
        return cls({own: (gpus[0].index,), cpu: ()}, own)

    @property
    def classes(self) -> frozenset[str]:
        return frozenset(self.gpus_of)

    def same_class(self, det_class: str) -> bool:
        return det_class in self.gpus_of

    def replay_class(self, det_class: str) -> str:
        """The class a replay of a task attested in ``det_class`` runs in."""
        return det_class if self.same_class(det_class) else self.nearest

    def gpus(self, det_class: str) -> tuple[int, ...]:
        return self.gpus_of[self.replay_class(det_class)]
