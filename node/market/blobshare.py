"""Blobs between the parties of a task: encrypted end to end, served only to whom they were
granted, checked by hash.

Every blob (a task's inputs, a checkpoint, a result) is encrypted under its own fresh key
(:mod:`node.market.sealing`) and named by the BLAKE3 hash of the ciphertext. A holder serves
the ciphertext (over the transfer layer's bulk channel where it has one,
:mod:`node.market.blob_bulk`, else in 1 MiB pieces over request/response) and the key, sealed
to the asking peer's X25519 key, only to peers it granted the blob to (the worker its task's
inputs, the requester the outputs and checkpoints): knowing a hash is not enough to read
someone's data, and a peer that carries a blob onwards (the requester re-sharing a checkpoint
after a failover) re-seals the key it was given. A fetch keeps what arrived in
``<hash>.part``, so one cut off (the holder gone, our daemon killed) resumes where it stopped:
a big checkpoint is not moved twice. The whole ciphertext is verified against its name before
it enters the store; the plaintext is stored beside it, and a small keyring
(:mod:`node.market.keyring`) maps one to the other across restarts.

A task's files are one blob each, from one holder at a time, rather than chunked datasets
with manifests and many sources: this also runs over the in-memory network that the market's
simulation uses. Big data goes as datasets a job names (:mod:`node.market.datasets`).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import nacl.signing
import trio
from blake3 import blake3

from consensus.errors import Invalid
from consensus.market.messages import BlobRef
from consensus.peer_id import short
from node.market.blob_bulk import BULK_PIECE_BYTES, BulkCarrier, send_blob
from node.market.keyring import keyring_of
from node.market.net import MarketNet
from node.market.sealing import (
    SealError,
    decrypt_blocks,
    encrypt_blocks,
    new_key,
    open_key,
    seal_key,
)
from node.transfer.channel import Body
from p2p.host import DialError
from p2p.reqresp import RemoteError, RequestError, RequestRejected
from storage.blobs import BlobStore, check_digest

if TYPE_CHECKING:
    from node.market.datasets import Datasets

log = logging.getLogger(__name__)

Take = Callable[[Body], Awaitable[None]]

PROTOCOL = "/idlegrid/blob/1"
PIECE_BYTES = 1 << 20
PART_SUFFIX = "part"  # a fetch's ciphertext so far, resumed by the next fetch of the blob
PIECE_TIMEOUT_S = 30.0
BULK_FRAME_TIMEOUT_S = 120.0  # a 4 MiB frame at 35 KB/s; slower links take pieces
NO_BULK_RETRY_S = 600.0  # a holder whose bulk channel failed is asked in pieces this long
LEFTOVER_KEEP_S = 86_400  # a part nobody resumed for a day (and a temp file kill -9 left) goes
GRANTS_SWEPT_FROM = 1024  # granted blobs before the grants of deleted ones are looked for


class FetchFailed(Exception):
    """No holder gave us the blob intact.

    Attributes:
        liars: the holders that answered with bytes that are not the blob (or a key that does
            not open it): their fault, not the network's, since every stream is authenticated
            and integrity-checked. A holder that was merely unreachable is not among them.
        missing: the holders that answered that they hold no such blob for us.
    """

    def __init__(
        self,
        message: str,
        liars: frozenset[str] = frozenset(),
        missing: frozenset[str] = frozenset(),
    ) -> None:
        super().__init__(message)
        self.liars, self.missing = liars, missing


class HolderLied(FetchFailed):
    """One holder served what is not the blob it names."""


class BlobShare:
    def __init__(
        self, net: MarketNet, store: BlobStore, scratch: Path, key: nacl.signing.SigningKey
    ) -> None:
        self.net, self.store, self.scratch, self._node_key = net, store, scratch, key
        self.keyring = keyring_of(scratch)
        self._grants: dict[str, set[str]] = {}  # blob (hex) -> the peers it is granted to
        self._sweep_grants_at = GRANTS_SWEPT_FROM
        self._fetching: dict[str, trio.Lock] = {}
        # The node's dataset service, for the datasets a job names (set by the daemon).
        self.datasets: Datasets | None = None
        # The transfer layer's bulk channel, the fast path for ciphertext (set by the daemon).
        self.bulk: BulkCarrier | None = None
        self.served: Counter[str] = Counter()  # pieces sent, bulk tickets given ("pieces", "bulk")
        self._no_bulk: dict[str, float] = {}  # holder -> until when we take pieces from it
        # Told of each key served and to whom: a fetch asks for the key last, so a grantor
        # learns here that the peer now holds the blob (a worker, that its requester took a
        # result: set by the worker service).
        self.key_served: Callable[[str, bytes], None] = _no_one_told

    def register(self) -> None:
        self.net.serve(PROTOCOL, self._serve)
        self.sweep_scratch()

    def sweep_scratch(self, now_s: float | None = None) -> int:
        """Deletes parts of fetches nobody resumed for a day, and the decrypted or sealed
        temporary copies that daemons before 2026-12 left when killed; returns how many
        went. Run at start-up and before each fetch (a directory listing: cheap beside a
        fetch)."""
        cutoff = (time.time() if now_s is None else now_s) - LEFTOVER_KEEP_S
        gone = 0
        for path in self.scratch.glob("*") if self.scratch.is_dir() else ():
            if path.suffix in (f".{PART_SUFFIX}", ".plain", ".sealed"):
                with contextlib.suppress(FileNotFoundError):
                    if path.stat().st_mtime < cutoff:
                        path.unlink()
                        gone += 1
        return gone

    def grant(self, peer: str, digest: bytes) -> None:
        self._grants.setdefault(digest.hex(), set()).add(peer)
        if len(self._grants) >= self._sweep_grants_at:
            self._drop_deleted_grants()

    def revoke(self, peer: str, digest: bytes) -> None:
        """Takes back ``peer``'s grant of ``digest``: whoever granted it knows that the peer
        can no longer need it (the requester, once the job whose blob it is has ended)."""
        peers = self._grants.get(digest.hex())
        if peers is not None:
            peers.discard(peer)
            if not peers:
                del self._grants[digest.hex()]

    def _drop_deleted_grants(self) -> None:
        """Drops the grants of blobs no longer held (file expiry deleted them): nothing can
        be served under them. Looked for again once the granted blobs double, so each grant
        costs a stat or two, amortised."""
        self._grants = {d: peers for d, peers in self._grants.items() if self._held(d)}
        self._sweep_grants_at = max(GRANTS_SWEPT_FROM, 2 * len(self._grants))

    def _held(self, digest: str) -> bool:
        """Whether a grant of ``digest`` can still serve something: its ciphertext or its key
        (a peer that has the ciphertext asks for the key last)."""
        try:
            return self.store.has(digest) or self.keyring.used_ms(digest) is not None
        except ValueError:  # not a blob's name: nothing could be served under it
            return False

    def _is_granted(self, peer: str, digest: bytes) -> bool:
        return peer in self._grants.get(digest.hex(), ())

    def local_path(self, ref: BlobRef) -> Path | None:
        """Where the plaintext of ``ref`` is, if we hold it."""
        entry = self.keyring.get(ref.hash.hex())
        if entry is None or not self.store.has(entry[1]):
            return None
        self.keyring.touch(ref.hash.hex())
        return self.store.path(entry[1])

    def sealed_size(self, digest: bytes) -> int:
        """The size of a blob we hold, as stored (encrypted): what a ``BlobRef`` names."""
        return self.store.path(digest.hex()).stat().st_size

    def read_plain(self, digest: bytes) -> bytes:
        """The plaintext of a blob we hold (synchronous; a checkpoint for a challenge).

        Raises:
            FileNotFoundError: we hold no such blob, or not its key.
        """
        entry = self.keyring.get(digest.hex())
        if entry is None or not self.store.has(entry[1]):
            raise FileNotFoundError(f"no plaintext of blob {digest.hex()[:12]} here")
        self.keyring.touch(digest.hex())
        return self.store.get(entry[1])

    def touch(self, digests: Iterable[bytes]) -> None:
        """Marks blobs used now: a worker's, when it attests the task they belong to."""
        for digest in digests:
            self.keyring.touch(digest.hex())

    async def put(self, path: Path) -> BlobRef:
        """Encrypts and stores the file at ``path``; returns a reference naming us as holder."""
        key = new_key()
        digest = await trio.to_thread.run_sync(self.store.put_stream, encrypt_blocks(key, path))
        plain = await trio.to_thread.run_sync(self.store.put_file, path)
        await trio.to_thread.run_sync(self.keyring.save, digest, key, plain)
        size = self.store.path(digest).stat().st_size
        return BlobRef(hash=bytes.fromhex(digest), size=size, holders=[self.net.peer_id])

    async def fetch(self, ref: BlobRef, addrs_of: Callable[[str], list[str]]) -> Path:
        """The plaintext of the blob in our store, fetched from its holders if we lack it.

        Raises:
            FetchFailed: every holder failed, served bytes that do not match the hash, or
                gave no key that opens them.
        """
        local = self.local_path(ref)
        if local is not None:
            return local
        # Parts of fetches that were cancelled (an attempt ended) and never resumed: gone a
        # day later, while the daemon runs, not only at its next start.
        await trio.to_thread.run_sync(self.sweep_scratch)
        errors, liars, missing = [], set(), set()
        for holder in ref.holders:
            try:
                return await self._fetch_from(holder, addrs_of(holder), ref)
            except (RequestError, FetchFailed) as exc:
                errors.append(f"{short(holder)}: {exc}")
                if isinstance(exc, HolderLied):
                    liars.add(holder)
                    self.net.blame(holder, f"blob {ref.hash.hex()[:12]}: {exc}")
                elif isinstance(exc, RemoteError) and exc.code == "not_found":
                    missing.add(holder)
        digest = ref.hash.hex()
        why = "; ".join(errors) or "no holder"
        raise FetchFailed(
            f"blob {digest[:12]} not fetched: {why}", frozenset(liars), frozenset(missing)
        )

    async def _fetch_from(self, holder: str, addrs: list[str], ref: BlobRef) -> Path:
        if not self.store.has(ref.hash.hex()):
            await self._fetch_ciphertext(holder, addrs, ref)
        reply = await self.net.request(holder, addrs, PROTOCOL, {"key": ref.hash}, timeout_s=30)
        box = reply.get("box") if isinstance(reply, dict) else None
        if not isinstance(box, bytes):
            raise HolderLied("no key for the blob")
        try:
            key = open_key(box, self._node_key)
            return await self._open(ref.hash.hex(), key)
        except SealError as exc:
            raise HolderLied(str(exc)) from None  # the next holder is tried

    async def _open(self, digest: str, key: bytes) -> Path:
        blocks = decrypt_blocks(key, self.store.path(digest))  # a bad block stores nothing
        plain_digest = await trio.to_thread.run_sync(self.store.put_stream, blocks)
        await trio.to_thread.run_sync(self.keyring.save, digest, key, plain_digest)
        return self.store.path(plain_digest)

    async def _fetch_ciphertext(self, holder: str, addrs: list[str], ref: BlobRef) -> None:
        """Fetches the ciphertext into ``<hash>.part`` in the scratch folder, resuming what an
        earlier fetch (cut off, or before a restart) left there, then stores it.

        A holder is blamed only for bytes that all came from it: when the whole does not
        match over a resumed prefix (another holder's, or another run's), the part goes and
        the same holder is asked for all of it once more.
        """
        digest = check_digest(ref.hash.hex())
        async with self._fetch_lock(digest):
            if self.store.has(digest):
                return  # a fetch of the same blob finished while we waited
            self.scratch.mkdir(parents=True, exist_ok=True)
            part = self.scratch / f"{digest}.{PART_SUFFIX}"
            if not await self._fetch_part(holder, addrs, ref, part):
                log.info("resumed part did not match, fetching it whole",
                         extra={"blob": digest[:12], "holder": short(holder)})  # fmt: skip
                await self._fetch_part(holder, addrs, ref, part)  # from 0: all its bytes
            try:  # the part was hashed as it was written: moved, not copied
                await trio.to_thread.run_sync(self.store.adopt, part, digest)
            except ValueError:  # it changed under us: our bug or our disk
                part.unlink(missing_ok=True)
                raise FetchFailed("stored bytes do not match the hash") from None

    async def _fetch_part(self, holder: str, addrs: list[str], ref: BlobRef, part: Path) -> bool:
        """Completes ``part`` from ``holder``. False when a part resumed from earlier bytes does
        not match the blob's hash (it is gone: nobody is to blame).

        Raises:
            HolderLied: ``holder``'s own bytes are not the blob (the part is gone).
            RequestError: ``holder`` did not answer (the part is kept for a resume).
        """
        hasher = blake3()
        resumed = offset = await trio.to_thread.run_sync(_resume, part, hasher, ref.size)
        try:
            with part.open("ab") as out:

                def write(data: Body) -> None:
                    hasher.update(data)
                    out.write(data)

                async def take(data: Body) -> None:
                    # off the event loop: disks are slow
                    await trio.to_thread.run_sync(write, data)

                await self._fill(holder, addrs, ref, offset, take)
        except HolderLied:
            part.unlink(missing_ok=True)
            raise
        if hasher.digest() != ref.hash:
            part.unlink(missing_ok=True)
            if not resumed:
                raise HolderLied("bytes do not match the hash")  # the next holder is tried
            return False
        return True

    async def _fill(
        self, holder: str, addrs: list[str], ref: BlobRef, offset: int, take: Take
    ) -> None:
        """Hands ``take`` the blob's bytes from ``offset`` to its end: over a bulk channel
        where the holder offers one (:mod:`node.market.blob_bulk`), else, or from where one
        broke, in pieces over libp2p."""
        if self.bulk is not None and offset < ref.size:
            offset = await self._fill_bulk(holder, addrs, ref, offset, take)
        while offset < ref.size:
            data = await self._piece(holder, addrs, ref, offset)
            await take(data)
            offset += len(data)

    async def _fill_bulk(
        self,
        holder: str,
        addrs: list[str],
        ref: BlobRef,
        offset: int,
        take: Take,
    ) -> int:
        """Takes what a bulk channel from ``holder`` brings; returns the offset reached.

        Raises:
            HolderLied: it sent more than the blob holds, or an empty frame.
        """
        assert self.bulk is not None
        now = trio.current_time()
        if self._no_bulk.get(holder, now) > now:
            return offset  # it failed lately: pieces, without waiting on it again
        request = {"bulk": ref.hash, "offset": offset}
        try:
            with trio.fail_after(PIECE_TIMEOUT_S):
                channel = await self.bulk.open(holder, addrs, PROTOCOL, request)
        except (RequestError, DialError, OSError, trio.TooSlowError) as exc:
            if not (isinstance(exc, RemoteError) and exc.code == "not_found"):  # not its fault
                self._no_bulk = {h: t for h, t in self._no_bulk.items() if t > now}
                self._no_bulk[holder] = now + NO_BULK_RETRY_S
            log.info("no bulk channel from a blob holder, taking pieces",
                     extra={"holder": short(holder), "error": repr(exc)})  # fmt: skip
            return offset
        try:
            while offset < ref.size:
                with trio.fail_after(BULK_FRAME_TIMEOUT_S):
                    data = await channel.receive(BULK_PIECE_BYTES)
                if not 0 < len(data) <= ref.size - offset:
                    raise HolderLied(f"a bulk frame of {len(data)} bytes at {offset}")
                await take(data)
                offset += len(data)
                channel.release(data)
        except (RequestError, trio.TooSlowError) as exc:
            log.info("bulk channel for a blob broke, taking the rest in pieces",
                     extra={"holder": short(holder), "error": repr(exc)})  # fmt: skip
        finally:
            await channel.aclose()
        return offset

    async def _piece(self, holder: str, addrs: list[str], ref: BlobRef, offset: int) -> bytes:
        length = min(PIECE_BYTES, ref.size - offset)
        payload = {"hash": ref.hash, "offset": offset, "length": length}
        reply = await self.net.request(holder, addrs, PROTOCOL, payload, timeout_s=PIECE_TIMEOUT_S)
        data = reply.get("data") if isinstance(reply, dict) else None
        if not isinstance(data, bytes) or len(data) != length:
            raise HolderLied("a piece of the wrong size")
        return data

    @contextlib.asynccontextmanager
    async def _fetch_lock(self, digest: str) -> AsyncIterator[None]:
        """One fetch per blob at a time in this process: they would share its part file."""
        lock = self._fetching.setdefault(digest, trio.Lock())
        try:
            async with lock:
                yield
        finally:
            if not lock.locked() and lock.statistics().tasks_waiting == 0:
                self._fetching.pop(digest, None)

    async def _serve(self, peer: str, payload: Any) -> Any:
        if not isinstance(payload, dict):
            raise RequestRejected("malformed", "expected a map")
        if "key" in payload:
            return self._serve_key(peer, payload["key"])
        if "bulk" in payload:
            return self._serve_bulk(peer, payload["bulk"], payload.get("offset"))
        digest, offset, length = payload.get("hash"), payload.get("offset"), payload.get("length")
        if not (isinstance(digest, bytes) and isinstance(offset, int) and isinstance(length, int)):
            raise RequestRejected("malformed", "hash, offset and length are required")
        path = self._granted(peer, digest)
        if offset < 0 or not 0 < length <= PIECE_BYTES:
            raise RequestRejected("malformed", "offset or length out of range")
        data = await trio.to_thread.run_sync(_read_piece, path, offset, length)
        self.served["pieces"] += 1
        return {"data": data}

    def _serve_bulk(self, peer: str, digest: Any, offset: Any) -> Any:
        if not (isinstance(digest, bytes) and isinstance(offset, int)):
            raise RequestRejected("malformed", "bulk wants a blob hash and an offset")
        path = self._granted(peer, digest)
        if not 0 <= offset < path.stat().st_size:
            raise RequestRejected("malformed", "offset out of range")
        if self.bulk is None:
            raise RequestRejected("no_bulk", "this holder has no bulk channel")
        ticket = self.bulk.ticket(peer, functools.partial(send_blob, path, offset))
        self.served["bulk"] += 1
        return ticket

    def _granted(self, peer: str, digest: bytes) -> Path:
        """The ciphertext of ``digest`` if we hold it and granted it to ``peer``.

        Raises:
            RequestRejected: not_found, for either reason: a stranger learns nothing.
        """
        if not self._is_granted(peer, digest) or not self.store.has(digest.hex()):
            raise RequestRejected("not_found", "no such blob for you")
        return self.store.path(digest.hex())

    def _serve_key(self, peer: str, digest: Any) -> Any:
        if not isinstance(digest, bytes):
            raise RequestRejected("malformed", "key wants a blob hash")
        entry = self.keyring.get(digest.hex())
        if not self._is_granted(peer, digest) or entry is None:
            raise RequestRejected("not_found", "no such blob for you")
        self.keyring.touch(digest.hex())
        try:
            box = seal_key(entry[0], peer)
        except Invalid:
            raise RequestRejected("malformed", "peer id has no X25519 twin") from None
        self.key_served(peer, digest)
        return {"box": box}


def _no_one_told(_peer: str, _digest: bytes) -> None:
    pass


def _resume(part: Path, hasher: Any, size: int) -> int:
    """Feeds what ``part`` holds to ``hasher``; its length, or 0 when it is not a prefix of a
    blob of ``size`` bytes (then it is emptied)."""
    try:
        held = part.stat().st_size
    except FileNotFoundError:
        return 0
    if held > size:
        part.unlink()
        return 0
    with part.open("rb") as f:
        for chunk in iter(lambda: f.read(PIECE_BYTES), b""):
            hasher.update(chunk)
    return held


def _read_piece(path: Path, offset: int, length: int) -> bytes:
    with path.open("rb") as f:
        f.seek(offset)
        return f.read(length)
