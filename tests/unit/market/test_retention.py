"""consensus.market.retention: which task files a node deletes."""

from __future__ import annotations

from consensus.market.retention import HeldFile, InUse, expired, orphaned_plaintexts

DAY = 86_400_000
NOW = 100 * DAY
NOTHING_OPEN = InUse(kept=frozenset(), since_ms=None)


def held(sealed: str, used_days_ago: float, plain: str = "") -> HeldFile:
    return HeldFile(
        sealed=sealed, plain=plain or f"p-{sealed}", used_ms=NOW - int(used_days_ago * DAY)
    )


def sealed_of(files: list[HeldFile]) -> list[str]:
    return [f.sealed for f in files]


def test_files_unused_for_the_keep_time_go_oldest_first() -> None:
    files = [held("recent", 6.9), held("week", 7), held("month", 30)]
    assert sealed_of(expired(files, NOTHING_OPEN, now_ms=NOW, keep_ms=7 * DAY)) == ["month", "week"]


def test_kept_files_stay_whatever_their_age() -> None:
    in_use = InUse(kept=frozenset({"result"}), since_ms=None)
    files = [held("result", 300), held("inputs", 300)]
    assert sealed_of(expired(files, in_use, now_ms=NOW, keep_ms=DAY)) == ["inputs"]


def test_files_used_since_the_oldest_open_work_began_stay() -> None:
    # a task running for ten days: its first checkpoint is ten days old, yet it will be attested
    in_use = InUse(kept=frozenset(), since_ms=NOW - 10 * DAY)
    files = [held("first-checkpoint", 10), held("before-it", 10.5)]
    assert sealed_of(expired(files, in_use, now_ms=NOW, keep_ms=7 * DAY)) == ["before-it"]


def test_a_plaintext_goes_with_the_last_file_naming_it() -> None:
    one, twin, other = held("a", 9, "same"), held("b", 1, "same"), held("c", 9, "own")
    files = [one, twin, other]
    gone = expired(files, NOTHING_OPEN, now_ms=NOW, keep_ms=7 * DAY)
    assert sealed_of(gone) == ["a", "c"]
    assert orphaned_plaintexts(gone, files) == {"own"}
    assert orphaned_plaintexts([one, twin], files) == {"same"}
