"""ReplayGuard: remembers nonces until expiry, prunes by time, refuses rather than forgets."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consensus.envelope import ReplayGuard
from consensus.errors import Invalid, Overloaded, Replayed
from tests.unit.test_envelope import GOLDEN_PING, NOW, open_at

ALICE, BOB = b"a" * 32, b"b" * 32


def nonce(number: int) -> bytes:
    return number.to_bytes(16, "big")


def test_a_repeat_is_replayed_and_not_the_relays_fault() -> None:
    guard = ReplayGuard()
    guard.check_and_remember(ALICE, nonce(1), 200, 100)
    with pytest.raises(Replayed) as caught:
        guard.check_and_remember(ALICE, nonce(1), 200, 150)
    assert (caught.value.what, caught.value.reason) == ("nonce", "replayed")
    assert isinstance(caught.value, Invalid)
    assert caught.value.peer_fault is False
    assert Invalid("x", "y").peer_fault is True


def test_a_repeat_with_another_expiry_is_still_replayed() -> None:
    guard = ReplayGuard()
    guard.check_and_remember(ALICE, nonce(1), 200, 100)
    with pytest.raises(Replayed):
        guard.check_and_remember(ALICE, nonce(1), 500, 100)


def test_the_same_nonce_from_another_signer_is_fine() -> None:
    guard = ReplayGuard()
    guard.check_and_remember(ALICE, nonce(1), 200, 100)
    guard.check_and_remember(BOB, nonce(1), 200, 100)
    assert len(guard) == 2


def test_open_envelope_uses_the_guard() -> None:
    guard = ReplayGuard()
    open_at(GOLDEN_PING, replay=guard)
    with pytest.raises(Replayed):
        open_at(GOLDEN_PING, now_ms=NOW + 1, replay=guard)
    # Without a guard (a message read back from our own store) nothing is remembered.
    open_at(GOLDEN_PING)
    open_at(GOLDEN_PING)


def test_prune_drops_entries_in_expiry_order() -> None:
    guard = ReplayGuard()
    for number, expires in enumerate([300, 100, 200, 200]):
        guard.check_and_remember(ALICE, nonce(number), expires, 50)
    assert guard.next_deadline() == 100
    assert guard.prune(99) == 0
    assert guard.prune(100) == 1
    assert guard.next_deadline() == 200
    assert guard.prune(250) == 2
    assert len(guard) == 1
    assert guard.prune(10_000) == 1
    assert (len(guard), guard.next_deadline()) == (0, None)


def test_after_expiry_the_nonce_is_forgotten_and_a_resend_is_just_expired() -> None:
    guard = ReplayGuard()
    guard.check_and_remember(ALICE, nonce(1), 200, 100)
    with pytest.raises(Invalid) as caught:
        guard.check_and_remember(ALICE, nonce(1), 200, 200)
    assert (caught.value.what, caught.value.reason) == ("body.expires_ms", "expired")
    assert caught.value.peer_fault is False  # IGNORE: honest relays forward old gossip
    assert len(guard) == 0


def test_a_clock_stepping_back_cannot_resurrect_a_pruned_nonce() -> None:
    guard = ReplayGuard()
    guard.check_and_remember(ALICE, nonce(1), 200, 100)
    guard.prune(300)
    # The wall clock jumps back to 150: the message would look unexpired, but its nonce is gone.
    with pytest.raises(Invalid) as caught:
        guard.check_and_remember(ALICE, nonce(1), 200, 150)
    assert caught.value.reason == "expired"


def test_when_full_it_refuses_new_messages_but_remembers_old_ones() -> None:
    guard = ReplayGuard(max_entries=3)
    for number in range(3):
        guard.check_and_remember(ALICE if number % 2 else BOB, nonce(number), 1000 + number, 0)
    with pytest.raises(Overloaded) as caught:
        guard.check_and_remember(ALICE, nonce(9), 1000, 0)
    assert (caught.value.what, caught.value.reason) == ("nonce", "replay cache full")
    assert caught.value.peer_fault is False
    # A replay is still recognised as such while full: nothing was forgotten to make room.
    with pytest.raises(Replayed):
        guard.check_and_remember(BOB, nonce(0), 1000, 0)
    # Once the oldest entry expires there is room again.
    guard.check_and_remember(ALICE, nonce(9), 2000, 1000)
    assert len(guard) == 3


def test_one_signer_cannot_fill_the_cache_for_everyone() -> None:
    guard = ReplayGuard(max_entries=10, max_per_signer=2)
    guard.check_and_remember(ALICE, nonce(1), 100, 0)
    guard.check_and_remember(ALICE, nonce(2), 200, 0)
    with pytest.raises(Overloaded, match="this signer"):
        guard.check_and_remember(ALICE, nonce(3), 200, 0)
    guard.check_and_remember(BOB, nonce(3), 200, 0)
    guard.check_and_remember(ALICE, nonce(3), 200, 100)  # Alice's first entry expired at 100
    assert len(guard) == 3


def test_a_signer_must_be_a_public_key() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        ReplayGuard().check_and_remember(b"short", nonce(1), 200, 100)


OPERATIONS = st.lists(
    st.tuples(
        st.sampled_from([ALICE, BOB]),
        st.integers(0, 5),  # few nonces, so repeats are common
        st.integers(1, 60),  # time to live
        st.integers(0, 20),  # how far the clock moves first
    ),
    max_size=60,
)


@given(OPERATIONS)
def test_matches_a_naive_model(operations: list[tuple[bytes, int, int, int]]) -> None:
    guard = ReplayGuard(max_entries=4, max_per_signer=3)
    seen: dict[tuple[bytes, int], int] = {}
    now = 0
    for signer, number, ttl, step in operations:
        now += step
        seen = {key: expires for key, expires in seen.items() if expires > now}
        mine = sum(1 for key in seen if key[0] == signer)
        if (signer, number) in seen:
            expected: type[Exception] | None = Replayed
        elif len(seen) >= 4 or mine >= 3:
            expected = Overloaded
        else:
            expected = None
            seen[signer, number] = now + ttl
        try:
            guard.check_and_remember(signer, nonce(number), now + ttl, now)
            got: type[Exception] | None = None
        except Invalid as exc:
            got = type(exc)
        assert got is expected
        assert len(guard) == len(seen)
