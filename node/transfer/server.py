"""The holder's side: serves manifests and chunks of the datasets it offers, to whom it granted.

Knowing a dataset id is not enough to read it: a peer gets a dataset's manifest and chunks
only after :meth:`TransferServer.grant` (or from a server made with ``public=True``, as
``idlegrid data serve --public`` is). A chunk is read from the store verified against its
hash, so our own disk going bad is caught here rather than blamed on us by the receiver.
"""

from __future__ import annotations

import contextlib
import logging
from collections import Counter
from typing import Any

import trio
from libp2p.abc import INetStream
from libp2p.network.stream.exceptions import StreamError

from consensus.codec import DEFAULT_LIMITS
from consensus.errors import Invalid
from consensus.transfer.manifest import Manifest
from node.transfer.wire import (
    CHUNKS_PROTOCOL,
    MANIFEST_PROTOCOL,
    MAX_CHUNK_FRAME,
    MAX_MANIFEST_FRAME,
    pack_chunk,
)
from p2p import reqresp
from p2p.framing import RequestError, decode_body, encode_frame, read_frame_body
from p2p.host import Host
from p2p.reqresp import RequestRejected
from storage.blobs import BlobStore
from storage.errors import CorruptBlob

log = logging.getLogger(__name__)

IDLE_TIMEOUT_S = 60.0
NOT_FOUND = "not_found"


class TransferServer:
    """Offers datasets held in ``store`` over ``host``."""

    def __init__(self, host: Host, store: BlobStore, *, public: bool = False) -> None:
        self.host, self.store, self.public = host, store, public
        self._offered: dict[bytes, Manifest] = {}
        self._grants: set[tuple[str, bytes]] = set()
        self.served: Counter[bytes] = Counter()  # chunks sent per dataset, for status and tests

    def register(self) -> None:
        reqresp.serve(self.host, MANIFEST_PROTOCOL, self._manifest, max_bytes=MAX_MANIFEST_FRAME)
        self.host.set_stream_handler(CHUNKS_PROTOCOL, self._chunks)

    def offer(self, dataset_id: bytes, manifest: Manifest) -> None:
        """Serve this dataset (its chunks that the store holds) to granted peers."""
        self._offered[dataset_id] = manifest

    def grant(self, peer: str, dataset_id: bytes) -> None:
        self._grants.add((peer, dataset_id))

    def _manifest_for(self, peer: str, dataset_id: Any) -> Manifest | None:
        if not isinstance(dataset_id, bytes):
            return None
        if not self.public and (peer, dataset_id) not in self._grants:
            return None
        return self._offered.get(dataset_id)

    async def _manifest(self, peer: str, payload: Any) -> Any:
        dataset_id = payload.get("d") if isinstance(payload, dict) else None
        manifest = self._manifest_for(peer, dataset_id)
        if manifest is None or not isinstance(dataset_id, bytes):
            raise RequestRejected(NOT_FOUND, "no such dataset for you")
        return {"m": await trio.to_thread.run_sync(self.store.get, dataset_id.hex())}

    async def _chunks(self, stream: INetStream) -> None:
        peer = stream.muxed_conn.peer_id.to_base58()
        limits = DEFAULT_LIMITS
        try:
            while True:
                with trio.move_on_after(IDLE_TIMEOUT_S):
                    body = await read_frame_body(stream, 4096)
                    reply = await self._answer(peer, decode_body(body, limits))
                    await stream.write(encode_frame(reply, MAX_CHUNK_FRAME))
                    continue
                break  # idle
        except (RequestError, Invalid, StreamError, EOFError) as exc:
            log.debug("chunk stream from %s ended: %r", peer, exc)
        with trio.CancelScope(shield=True), contextlib.suppress(StreamError, OSError):
            await stream.close()

    async def _answer(self, peer: str, request: Any) -> dict[str, Any]:
        if not isinstance(request, dict) or not isinstance(request.get("i"), int):
            raise Invalid("chunk request", "expected {d: bytes, i: int}")
        index = request["i"]
        manifest = self._manifest_for(peer, request.get("d"))
        if manifest is None or not 0 <= index < len(manifest.chunks):
            return {"i": index, "e": NOT_FOUND}
        try:
            data = await self.read_chunk(manifest.chunks[index].hash.hex())
        except (FileNotFoundError, CorruptBlob):
            return {"i": index, "e": NOT_FOUND}
        compressed, payload = await trio.to_thread.run_sync(pack_chunk, data)
        self.served[request["d"]] += 1
        return {"i": index, "z": compressed, "b": payload}

    async def read_chunk(self, digest: str) -> bytes:
        """The chunk's bytes from the store, verified (a test overrides this to lie)."""
        return await trio.to_thread.run_sync(self.store.get, digest)
