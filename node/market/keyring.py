"""Blob keys on disk, beside the blob store: which key opens a blob and what it opens to.

One 0600 file per blob, named by the ciphertext's hash, holding the blob's key and the
plaintext's hash; its mtime is when the blob was last used, which the retention rule reads.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from consensus.market.retention import HeldFile
from node.home import write_private
from node.market.sealing import KEY_BYTES
from storage.blobs import check_digest


class Keyring:
    """Blob keys on disk: ``<root>/<ciphertext hash>`` holds the key and the plaintext hash."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def save(self, digest: str, key: bytes, plain_digest: str) -> None:
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_private(self.root / check_digest(digest), key + bytes.fromhex(plain_digest))

    def get(self, digest: str) -> tuple[bytes, str] | None:
        try:
            raw = (self.root / check_digest(digest)).read_bytes()
        except FileNotFoundError:
            return None
        if len(raw) != KEY_BYTES + 32:
            return None  # a torn write cannot happen (atomic rename); anything else: refetch
        return raw[:KEY_BYTES], raw[KEY_BYTES:].hex()

    def touch(self, digest: str) -> None:
        """Marks the blob used now (the entry's mtime): the retention rule keeps it longer."""
        with contextlib.suppress(FileNotFoundError):
            os.utime(self.root / check_digest(digest))

    def used_ms(self, digest: str) -> int | None:
        try:
            return (self.root / check_digest(digest)).stat().st_mtime_ns // 1_000_000
        except FileNotFoundError:
            return None

    def forget(self, digest: str) -> None:
        (self.root / check_digest(digest)).unlink(missing_ok=True)

    def entries(self) -> list[HeldFile]:
        """Every blob we hold a key for (synchronous: it reads the whole keyring)."""
        held = []
        for path in self.root.glob("*") if self.root.is_dir() else ():
            entry, used = self.get(path.name), self.used_ms(path.name)
            if entry is not None and used is not None:
                held.append(HeldFile(sealed=path.name, plain=entry[1], used_ms=used))
        return held


def keyring_of(scratch: Path) -> Keyring:
    """The keyring of the blobs whose scratch folder is ``scratch``."""
    return Keyring(scratch.parent / "keys")
