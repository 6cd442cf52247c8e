"""Datasets sealed to one peer: only its key opens them, and a hostile tar inside is refused."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest

from node.identity import NodeKeys
from node.market.sealing import SealError, encrypt_file, new_key, seal_key
from node.transfer.sealed import DATA_FILE, KEY_FILE, SEALED_DIR, open_tree, seal_tree


def files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_a_sealed_folder_opens_only_for_its_peer_and_holds_no_plaintext(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_bytes(b"the plaintext marker " * 100)
    (src / "sub" / "b.bin").write_bytes(os.urandom(3 << 20))
    peer, other = NodeKeys.generate(), NodeKeys.generate()
    staging = seal_tree(src, peer.peer_id, tmp_path / "staging")
    sealed = staging / SEALED_DIR
    assert sorted(p.name for p in sealed.iterdir()) == [DATA_FILE, KEY_FILE]
    assert b"plaintext marker" not in (sealed / DATA_FILE).read_bytes()

    with pytest.raises(SealError):
        open_tree(staging, other.signing_key)
    assert (sealed / DATA_FILE).exists()  # left as it was
    open_tree(staging, peer.signing_key)
    assert files(staging) == files(src)


def test_a_hostile_tar_inside_a_sealed_dataset_is_refused(tmp_path: Path) -> None:
    peer = NodeKeys.generate()
    plain = tmp_path / "evil.tar"
    with tarfile.open(plain, "w") as tar:
        info = tarfile.TarInfo("../escaped.txt")
        info.size = 4
        tar.addfile(info, io.BytesIO(b"evil"))
    out = tmp_path / "out"
    (out / SEALED_DIR).mkdir(parents=True)
    key = new_key()
    encrypt_file(key, plain, out / SEALED_DIR / DATA_FILE)
    (out / SEALED_DIR / KEY_FILE).write_bytes(seal_key(key, peer.peer_id))
    with pytest.raises(tarfile.FilterError):
        open_tree(out, peer.signing_key)
    assert not (tmp_path / "escaped.txt").exists()
