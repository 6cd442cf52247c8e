"""The requester's dispute check and its next steps, pure; and the entries the anchorer gossips
so that a requester can find and prove its entries."""

from __future__ import annotations

import nacl.signing
import pytest

from consensus.envelope import new_nonce, open_envelope, seal_body
from consensus.errors import Invalid
from consensus.kinds import Registry, Wei
from consensus.settlement.disputes import (
    ABOVE_CAP,
    ABOVE_SIGNED,
    NEVER_SIGNED,
    ChainView,
    Finding,
    disputable,
    dispute_key,
    next_step,
)
from consensus.settlement.epoch import Entry, assemble
from consensus.settlement.messages import (
    MAX_ENTRY_ROWS,
    MAX_PROOF_LEN,
    SETTLEMENT_KINDS,
    EntryRow,
    EpochEntries,
    entries_parts,
)

NOW = 1_800_000_000_000
ME, OTHER = b"\x01" * 20, b"\x09" * 20
W1, W2 = b"\x02" * 20, b"\x03" * 20
J1, J2 = b"\x11" * 32, b"\x12" * 32
T0, T1 = b"\x00" * 32, b"\x00" * 31 + b"\x01"
ENVELOPE_LIMIT = 64 * 1024


def entry(job: bytes, worker: bytes, amount: int, task: bytes = T0, who: bytes = ME) -> Entry:
    return Entry(who, worker, job, task, amount)


def reasons(found: list[Finding]) -> list[tuple[bytes, str, bool]]:
    return [(f.entry.job, f.reason, f.answerable) for f in found]


def test_every_reason_to_dispute_and_what_passes() -> None:
    ok = entry(J1, W1, 100)
    below = entry(J1, W2, 40)  # less than signed: we owe at least that, never disputed
    inflated = entry(J2, W1, 300)
    never = entry(J2, W2, 5, task=T1)
    capped = entry(J1, W1, 90, task=T1)
    others = entry(J2, W1, 10**30, who=OTHER)  # another requester's: not ours to judge
    signed = {ok.line: 100, below.line: 50, inflated.line: 200, capped.line: 120}
    caps = {capped.line: 60, ok.line: 100}
    found = disputable([ok, below, inflated, never, capped, others], ME, signed, caps)
    assert reasons(found) == [
        (J2, ABOVE_SIGNED, False), (J2, NEVER_SIGNED, False), (J1, ABOVE_CAP, False),
    ]  # fmt: skip
    assert "we signed at most 200" in found[0].detail and "300 wei" in found[0].detail
    assert "never signed" in found[1].detail and W2.hex() in found[1].detail
    assert "capped it at 60" in found[2].detail


def test_a_zero_voucher_line_counts_as_never_signed() -> None:
    e = entry(J1, W1, 1)
    assert reasons(disputable([e], ME, {e.line: 0}, {})) == [(J1, NEVER_SIGNED, False)]


def test_our_own_signature_shown_with_an_entry_overrides_records_that_lag() -> None:
    lagging = entry(J1, W1, 150)  # its reply never came back: our records say 100
    unknown = entry(J2, W2, 7)  # e.g. signed by hand with `wallet voucher`
    over_cap = entry(J1, W2, 80)
    signed = {lagging.line: 100, over_cap.line: 80}
    shown = {lagging.leaf(), unknown.leaf(), over_cap.leaf()}
    found = disputable([lagging, unknown, over_cap], ME, signed, {over_cap.line: 50}, shown)
    assert reasons(found) == [(J1, ABOVE_CAP, True)], "answerable: the contract takes vouchers"


def test_next_steps_of_a_dispute() -> None:
    def view(**kw: object) -> ChainView:
        base = {"latest": 3, "state": "pending", "deadline": 100, "answer_by": 0,
                "voided": False, "now": 50}  # fmt: skip
        return ChainView(**{**base, **kw})  # type: ignore[arg-type]

    assert next_step("found", 3, view()) == ("found", "dispute")
    assert next_step("found", 3, view(answer_by=150)) == ("disputed", None)  # sent before a crash
    assert next_step("found", 3, view(now=100)) == ("missed", None)
    assert next_step("found", 2, view()) == ("missed", None)
    assert next_step("disputed", 3, view(answer_by=150, now=149)) == ("disputed", None)
    assert next_step("disputed", 3, view(answer_by=150, now=150)) == ("disputed", "void")
    assert next_step("disputed", 3, view(answer_by=150, voided=True)) == ("voided", None)
    assert next_step("disputed", 3, view(answer_by=0)) == ("answered", None)
    with pytest.raises(ValueError, match="no next step"):
        next_step("voided", 3, view())


def test_dispute_key_is_the_contracts() -> None:
    # keccak256(abi.encode(uint64(7), bytes32(0x11..))) computed independently of eth_abi
    raw = (7).to_bytes(32, "big") + J1
    from eth_hash.auto import keccak  # noqa: PLC0415

    assert dispute_key(7, J1) == keccak(raw)


def parts_of(entries: list[Entry]) -> list[EpochEntries]:
    epoch = assemble(entries, {}, {}, 100)
    sigs = {e.leaf(): bytes([i % 250 + 1]) * 65 for i, e in enumerate(epoch.entries)}
    return [
        EpochEntries(expires_ms=NOW + 1000, nonce=new_nonce(), index=5,
                     entries_root=epoch.entries_tree.root, requester=r, part=p, parts=n, rows=rows)
        for r, p, n, rows in entries_parts(epoch, sigs)
    ]  # fmt: skip


def test_entries_travel_per_requester_in_parts_that_prove_to_the_root() -> None:
    mine = [entry(J1, W1, 10 + i, task=i.to_bytes(32, "big")) for i in range(MAX_ENTRY_ROWS + 3)]
    theirs = [entry(J2, W2, 5, who=OTHER)]
    msgs = parts_of(mine + theirs)
    assert [(m.requester, m.part, m.parts, len(m.rows)) for m in msgs] == [
        (ME, 0, 2, MAX_ENTRY_ROWS), (ME, 1, 2, 3), (OTHER, 0, 1, 1),
    ]  # fmt: skip
    got = {e for m in msgs[:2] for e, _, _ in m.entries()}
    assert got == set(mine)
    key = nacl.signing.SigningKey.generate()
    opened = open_envelope(seal_body(key, msgs[1]), NOW, Registry(SETTLEMENT_KINDS))
    assert opened.body == msgs[1]


def test_an_entry_that_does_not_prove_to_the_root_is_refused() -> None:
    (good,) = parts_of([entry(J1, W1, 10), entry(J1, W2, 20)])
    row = good.rows[0]
    inflated = EntryRow(worker=row.worker, job=row.job, task=row.task,
                        amount_wei=Wei(row.amount_wei + 1), previous_wei=Wei(0),
                        signature=row.signature, proof=row.proof)  # fmt: skip
    fields = {"expires_ms": NOW, "nonce": new_nonce(), "index": 5, "part": 0, "parts": 1,
              "entries_root": good.entries_root, "requester": ME}  # fmt: skip
    with pytest.raises(Invalid, match="row 0 does not prove"):
        EpochEntries(**fields, rows=[inflated])  # type: ignore[arg-type]
    with pytest.raises(Invalid, match="0 or 65 bytes"):
        EpochEntries(**fields, rows=[EntryRow(**{**row.__dict__, "signature": b"x"})])  # type: ignore[arg-type]
    with pytest.raises(Invalid, match="part 1 of 1"):
        EpochEntries(**{**fields, "part": 1}, rows=[row])  # type: ignore[arg-type]
    with pytest.raises(Invalid, match="1 to 48 rows"):
        EpochEntries(**fields, rows=[])  # type: ignore[arg-type]


def test_the_largest_entries_message_fits_the_gossip_envelope() -> None:
    root = b"\xaa" * 32
    row = EntryRow(worker=W1, job=J1, task=T0, amount_wei=Wei(2**256 - 1),
                   previous_wei=Wei(2**256 - 2), signature=b"\x01" * 65,
                   proof=[b"\xbb" * 32] * MAX_PROOF_LEN)  # fmt: skip
    # Built without validation (no real tree that deep): only the size is measured here.
    body = object.__new__(EpochEntries)
    for name, value in {"expires_ms": NOW, "nonce": new_nonce(), "index": 2**63 - 1,
                        "entries_root": root, "requester": ME, "part": 0, "parts": 1 << 16,
                        "rows": [row] * MAX_ENTRY_ROWS}.items():  # fmt: skip
        object.__setattr__(body, name, value)
    raw = seal_body(nacl.signing.SigningKey.generate(), body)
    assert len(raw) < ENVELOPE_LIMIT, f"{len(raw)} bytes"
