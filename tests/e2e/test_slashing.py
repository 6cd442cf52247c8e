"""A cheat slashed on chain by the sentries that caught it, on a whole localnet.

Two sentries judge every task (``verify.sentries_per_task = 2``, the contract's slash quorum);
worker-1, the cheapest, fakes its work (``tests/integration/cheating_executor.py``). Both
sentries fail it and sign the contract's Slash digest in their verdicts; one slash follows,
paid half to the burn address and half to the two sentries; the task re-runs on the honest
worker and the job is verified. The escrow invariant holds after it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from config.schema import VerifySettings
from node.localnet import net
from node.localnet.procs import stop_all
from node.localnet.state import State
from tests.e2e.helpers import ANSWER_JOB as JOB
from tests.e2e.helpers import ANSWER_WORK as WORK
from tests.e2e.helpers import escrow_returned, poll, submit, wait_final
from tests.e2e.invariant import assert_escrow_invariant, chain_contract

CHEAT = {"worker.executor_wrapper": "tests.integration.cheating_executor"}


@pytest.fixture
def localnet(tmp_path: Path) -> Iterator[State]:
    overrides: dict[str, dict[str, Any]] = {"*": {"verify.sentries_per_task": 2}, "worker-1": CHEAT}
    state = net.start(tmp_path / "ln", requesters=1, workers=2, sentries=2, chain_mode="auto",
                      overrides=overrides)  # fmt: skip
    try:
        yield state
    finally:
        stop_all(state.procs())


def test_two_sentries_fail_a_cheat_and_slash_its_stake_once(
    localnet: State, tmp_path: Path
) -> None:
    requester, cheat = localnet.node("requester-1"), localnet.node("worker-1")
    job_id = submit(requester, tmp_path / "job", JOB, {"work.py": WORK})
    view = wait_final(requester, job_id, 150)
    assert view["state"] == "verified", view["reason"]
    first, again = view["attempts"]
    assert first["worker"] == cheat.peer_id and first["payable_wei"] == "0"
    assert again["worker"] != cheat.peer_id

    _, contract = chain_contract(localnet)
    slashed = poll("the slash on chain", lambda: contract.events.Slashed().get_logs(from_block=0)
                   or None, 60)  # fmt: skip
    amount = VerifySettings().slash_wei
    assert len(slashed) == 1, "one slash, however many sentries caught it"
    assert slashed[0]["args"]["worker"].lower() == cheat.address.lower()
    assert slashed[0]["args"]["amount"] == amount
    bonded = contract.functions.stakes(slashed[0]["args"]["worker"]).call()[0]
    honest = localnet.node("worker-2")
    assert bonded == contract.functions.stakes(honest.address).call()[0] - amount
    poll("escrow returned", lambda: escrow_returned(requester), 90)
    assert_escrow_invariant(localnet)
