"""Datasets for one peer only: sealed end to end, so every holder keeps only ciphertext.

``data add PATH --for PEER`` packs PATH into a tar, encrypts it under a fresh key
(XChaCha20-Poly1305 in blocks, :mod:`node.market.sealing`) and seals the key to PEER's node
key; the dataset is those two files under :data:`SEALED_DIR`. Holders, relays and peers that
re-share it move and store ciphertext; only PEER's daemon opens it, after the fetch has checked
every chunk's hash, and unpacks it with tarfile's ``data`` filter (no absolute paths, no links
or ``..`` out of the target, no devices). The price: a change re-sends the whole sealed tar
(a fresh key and prefix each time, so no chunk is shared with the last version).
"""

from __future__ import annotations

import shutil
import tarfile
import tempfile
from pathlib import Path

import nacl.signing

from consensus.transfer.manifest import Manifest
from node.market.sealing import decrypt_file, encrypt_file, new_key, open_key, seal_key

SEALED_DIR = ".idlegrid-sealed"
KEY_FILE, DATA_FILE = "key.box", "data.tar.sealed"

# A sealed dataset shares no chunk with anything (fresh key), so small chunks buy it no
# deduplication; what they cost is work per chunk on both ends. Measured on 2 cores, 512 MiB
# sealed on the plain bulk channel: 1 MiB 627-660 MB/s, 2 MiB 778, 4 MiB 816-870, 8 MiB 963.
# 4 MiB keeps a chunk a few seconds long on a slow link (and a resume's loss small).
SEALED_CHUNK_BYTES = 4 << 20


def seal_tree(source: Path, peer_id: str, staging: Path) -> Path:
    """Writes ``staging/SEALED_DIR`` (the key box and the sealed tar of ``source``).

    Raises:
        consensus.errors.Invalid: ``peer_id`` is not an Ed25519 peer id.
    """
    key = new_key()
    box = seal_key(key, peer_id)  # first: a bad peer id fails before any work
    sealed = staging / SEALED_DIR
    sealed.mkdir(parents=True)
    plain = staging / "plain.tar"
    with tarfile.open(plain, "w") as tar:
        for entry in sorted(source.iterdir()) if source.is_dir() else [source]:
            tar.add(entry, arcname=entry.name)
    encrypt_file(key, plain, sealed / DATA_FILE)
    plain.unlink()
    (sealed / KEY_FILE).write_bytes(box)
    return staging


def is_sealed(manifest: Manifest) -> bool:
    """A dataset made by :func:`seal_tree`: these two files and nothing else (a folder that
    merely holds a sealed one among open files is open, and must not cross the wire plain)."""
    names = {f.path for f in manifest.files}
    return names == {f"{SEALED_DIR}/{KEY_FILE}", f"{SEALED_DIR}/{DATA_FILE}"}


def open_tree(out: Path, signing_key: nacl.signing.SigningKey) -> None:
    """Replaces ``out/SEALED_DIR`` (materialized from a fetch) with what it seals.

    Raises:
        node.market.sealing.SealError: not sealed to this node, or the ciphertext is corrupt.
        tarfile.FilterError: the tar holds a path or link the ``data`` filter refuses.
    """
    sealed = out / SEALED_DIR
    key = open_key((sealed / KEY_FILE).read_bytes(), signing_key)
    with tempfile.TemporaryDirectory(dir=out) as tmp:
        plain = Path(tmp) / "plain.tar"
        decrypt_file(key, sealed / DATA_FILE, plain)
        with tarfile.open(plain) as tar:
            tar.extractall(out, filter="data")
    shutil.rmtree(sealed)
