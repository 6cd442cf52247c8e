"""Job data sealing: the file format's guarantees and the key box."""

from __future__ import annotations

import os
from pathlib import Path

import nacl.signing
import pytest

from consensus.peer_id import peer_id_from_public_key
from node.market.sealing import (
    BLOCK,
    MAGIC,
    SealError,
    decrypt_file,
    encrypt_file,
    new_key,
    open_key,
    seal_key,
)


def roundtrip(tmp_path: Path, data: bytes) -> tuple[bytes, bytes]:
    key = new_key()
    (tmp_path / "plain").write_bytes(data)
    encrypt_file(key, tmp_path / "plain", tmp_path / "sealed")
    decrypt_file(key, tmp_path / "sealed", tmp_path / "out")
    return (tmp_path / "sealed").read_bytes(), (tmp_path / "out").read_bytes()


@pytest.mark.parametrize("size", [0, 1, BLOCK - 1, BLOCK, BLOCK + 1, 2 * BLOCK + 5])
def test_round_trip_at_block_edges(tmp_path: Path, size: int) -> None:
    data = os.urandom(size)
    sealed, out = roundtrip(tmp_path, data)
    assert out == data
    assert sealed.startswith(MAGIC)
    assert size < 64 or data[:64] not in sealed  # no plaintext leaks into the ciphertext


def sealed_file(tmp_path: Path, size: int) -> tuple[bytes, Path]:
    key = new_key()
    (tmp_path / "plain").write_bytes(os.urandom(size))
    encrypt_file(key, tmp_path / "plain", tmp_path / "sealed")
    return key, tmp_path / "sealed"


def test_a_flipped_bit_is_refused(tmp_path: Path) -> None:
    key, sealed = sealed_file(tmp_path, 3000)
    raw = bytearray(sealed.read_bytes())
    raw[len(raw) // 2] ^= 1
    sealed.write_bytes(bytes(raw))
    with pytest.raises(SealError, match="block 0"):
        decrypt_file(key, sealed, tmp_path / "out")


def test_a_file_cut_at_a_block_boundary_is_refused(tmp_path: Path) -> None:
    key, sealed = sealed_file(tmp_path, 2 * BLOCK + 10)
    header = len(MAGIC) + 16
    sealed.write_bytes(sealed.read_bytes()[: header + 2 * (BLOCK + 16)])  # last block dropped
    with pytest.raises(SealError, match="block 1"):
        decrypt_file(key, sealed, tmp_path / "out")


def test_swapped_blocks_are_refused(tmp_path: Path) -> None:
    key, sealed = sealed_file(tmp_path, 3 * BLOCK)
    raw = sealed.read_bytes()
    header, step = len(MAGIC) + 16, BLOCK + 16
    blocks = [raw[header + i * step : header + (i + 1) * step] for i in range(3)]
    sealed.write_bytes(raw[:header] + blocks[1] + blocks[0] + blocks[2])
    with pytest.raises(SealError, match="block 0"):
        decrypt_file(key, sealed, tmp_path / "out")


def test_the_wrong_key_and_foreign_files_are_refused(tmp_path: Path) -> None:
    _, sealed = sealed_file(tmp_path, 100)
    with pytest.raises(SealError, match="block 0"):
        decrypt_file(new_key(), sealed, tmp_path / "out")
    (tmp_path / "foreign").write_bytes(b"tar data, not sealed")
    with pytest.raises(SealError, match="not sealed"):
        decrypt_file(new_key(), tmp_path / "foreign", tmp_path / "out")


def test_a_key_box_opens_only_for_the_peer_it_was_sealed_to() -> None:
    worker, other = nacl.signing.SigningKey.generate(), nacl.signing.SigningKey.generate()
    key = new_key()
    box = seal_key(key, peer_id_from_public_key(bytes(worker.verify_key)))
    assert key not in box
    assert open_key(box, worker) == key
    with pytest.raises(SealError, match="does not open"):
        open_key(box, other)
