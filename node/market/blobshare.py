"""Blobs between the parties of a task: served only to whom they were granted, checked by hash.

A stand-in for the transfer layer until it lands (see the transfer issue): one holder at a
time, 1 MiB pieces over request/response, the whole blob verified against its BLAKE3 name
before it enters the store. A holder serves a blob only to peers it granted it to (the
worker its task's inputs, the requester the outputs and checkpoints), so knowing a hash is
not enough to read someone's data.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio
from blake3 import blake3

from consensus.market.messages import BlobRef
from node.market.net import MarketNet
from p2p.reqresp import RequestError, RequestRejected
from storage.blobs import BlobStore

log = logging.getLogger(__name__)

PROTOCOL = "/idlegrid/blob/1"
PIECE_BYTES = 1 << 20


class FetchFailed(Exception):
    """No holder gave us the blob intact."""


class BlobShare:
    def __init__(self, net: MarketNet, store: BlobStore, scratch: Path) -> None:
        self.net, self.store, self.scratch = net, store, scratch
        self._grants: set[tuple[str, str]] = set()

    def register(self) -> None:
        self.net.serve(PROTOCOL, self._serve)

    def grant(self, peer: str, digest: bytes) -> None:
        self._grants.add((peer, digest.hex()))

    async def put(self, path: Path) -> BlobRef:
        """Stores the file at ``path`` and returns a reference naming us as its holder."""
        digest = await trio.to_thread.run_sync(self.store.put_file, path)
        size = self.store.path(digest).stat().st_size
        return BlobRef(hash=bytes.fromhex(digest), size=size, holders=[self.net.peer_id])

    async def fetch(self, ref: BlobRef, addrs_of: Callable[[str], list[str]]) -> Path:
        """The blob's path in our store, fetched from its holders if we lack it.

        Raises:
            FetchFailed: every holder failed or served bytes that do not match the hash.
        """
        digest = ref.hash.hex()
        if self.store.has(digest):
            return self.store.path(digest)
        errors = []
        for holder in ref.holders:
            try:
                await self._fetch_from(holder, addrs_of(holder), ref)
            except (RequestError, FetchFailed) as exc:
                errors.append(f"{holder[-8:]}: {exc}")
                continue
            return self.store.path(digest)
        raise FetchFailed(f"blob {digest[:12]} not fetched: {'; '.join(errors) or 'no holder'}")

    async def _fetch_from(self, holder: str, addrs: list[str], ref: BlobRef) -> None:
        self.scratch.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=self.scratch, suffix=".part") as part:
            hasher, offset = blake3(), 0
            while offset < ref.size:
                length = min(PIECE_BYTES, ref.size - offset)
                payload = {"hash": ref.hash, "offset": offset, "length": length}
                reply = await self.net.request(holder, addrs, PROTOCOL, payload, timeout_s=30)
                data = reply.get("data") if isinstance(reply, dict) else None
                if not isinstance(data, bytes) or len(data) != length:
                    raise FetchFailed("a piece of the wrong size")
                hasher.update(data)
                part.write(data)
                offset += length
            if hasher.digest() != ref.hash:
                raise FetchFailed("bytes do not match the hash")  # the next holder is tried
            part.flush()
            digest = await trio.to_thread.run_sync(self.store.put_file, Path(part.name))
        if digest != ref.hash.hex():  # the file changed under us: our bug or our disk
            raise FetchFailed("stored bytes do not match the hash")

    async def _serve(self, peer: str, payload: Any) -> Any:
        if not isinstance(payload, dict):
            raise RequestRejected("malformed", "expected a map")
        digest, offset, length = payload.get("hash"), payload.get("offset"), payload.get("length")
        if not (isinstance(digest, bytes) and isinstance(offset, int) and isinstance(length, int)):
            raise RequestRejected("malformed", "hash, offset and length are required")
        if (peer, digest.hex()) not in self._grants or not self.store.has(digest.hex()):
            raise RequestRejected("not_found", "no such blob for you")
        if offset < 0 or not 0 < length <= PIECE_BYTES:
            raise RequestRejected("malformed", "offset or length out of range")
        path = self.store.path(digest.hex())
        return {"data": await trio.to_thread.run_sync(_read_piece, path, offset, length)}


def _read_piece(path: Path, offset: int, length: int) -> bytes:
    with path.open("rb") as f:
        f.seek(offset)
        return f.read(length)
