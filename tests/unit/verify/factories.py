"""An honest run's checkpoints, its attestation, and challenge answers built from them."""

from __future__ import annotations

from dataclasses import dataclass, replace

from blake3 import blake3

from consensus.market.messages import TaskRef
from consensus.verify import tree
from consensus.verify.messages import Attestation, ChallengeResponse, attestation_id

REF = TaskRef(job_id=b"j" * 16, task=0, attempt=0)


@dataclass
class Run:
    files: list[bytes]  # checkpoint files, one per segment

    @property
    def hashes(self) -> list[bytes]:
        return [blake3(f).digest() for f in self.files]

    def leaves(self) -> list[tree.Leaf]:
        return tree.chain_leaves(self.hashes)

    def attestation(self, **changes: object) -> Attestation:
        leaves = self.leaves()
        att = Attestation(
            expires_ms=10**13, nonce=b"n" * 16, ref=REF, worker="w", root=tree.root(leaves),
            segments=len(leaves), result_hash=leaves[-1].hash, seconds=60, runtime="train",
            det_class="cpu/torch-2",
        )  # fmt: skip
        return replace(att, **changes)  # type: ignore[arg-type]

    def answer(self, index: int, with_end: bool = False) -> ChallengeResponse:
        leaves, levels = self.leaves(), tree.levels(self.leaves())
        before = leaves[index - 1] if index else None
        return ChallengeResponse(
            ref=REF, index=index, before=before,
            before_proof=tree.proof(levels, index - 1) if index else [],
            after=leaves[index], after_proof=tree.proof(levels, index),
            checkpoint=self.files[index - 1] if index else b"",
            end_checkpoint=self.files[index] if with_end else b"",
        )  # fmt: skip


def honest(n: int) -> Run:
    return Run([f"state {i}".encode() * 10 for i in range(n)])


def att_id(run: Run) -> bytes:
    return attestation_id(run.attestation())
