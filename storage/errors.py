"""The storage layer's own errors.

Kept to a small flat set so callers can tell *our* conditions apart from sqlite's: an
``sqlite3.Error`` raised by a statement is never wrapped (callers rely on catching
``sqlite3.IntegrityError`` for compare-and-set), so everything here is about the store itself.
"""

from __future__ import annotations

from pathlib import Path


class StorageError(Exception):
    """Base class, so a caller can catch "the store is unusable" in one clause."""


class StorageClosed(StorageError):
    """The database was closed; a call after ``close()`` is a bug in the caller's lifetimes."""


class SchemaTooNew(StorageError):
    """The data dir was migrated by a newer idlegrid than this one.

    Opening it anyway would let old code write rows the newer schema's invariants do not
    expect, so we refuse and tell the operator to upgrade instead.
    """

    def __init__(self, found: int, supported: int) -> None:
        super().__init__(
            f"database schema version {found} is newer than the newest this idlegrid "
            f"understands ({supported}): this data dir was written by a newer idlegrid; "
            "upgrade idlegrid or point it at another data dir"
        )
        self.found = found
        self.supported = supported


class CorruptBlob(StorageError):
    """A blob's bytes no longer hash to its name (disk damage or tampering).

    The damaged file has already been moved out of the way when this is raised, so the
    caller can treat the blob as missing and fetch it again.
    """

    def __init__(self, digest: str, path: Path, quarantined_to: Path | None = None) -> None:
        where = f", moved to {quarantined_to}" if quarantined_to is not None else ""
        super().__init__(f"blob {digest} at {path} failed its hash check{where}")
        self.digest = digest
        self.path = path
        self.quarantined_to = quarantined_to
