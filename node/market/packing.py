"""Job data as one deterministic tar: inputs up to the worker, outputs back to the requester.

A stand-in for the transfer layer (chunked, resumable, multi-source) until it lands: small jobs
move fine as one content-addressed blob. The tar is deterministic (sorted names, zero times
and owners) so the same folder always gives the same hash, and unpacking refuses anything
that would land outside the target (absolute paths, ``..``, links, devices) with the data
filter of :mod:`tarfile`.
"""

from __future__ import annotations

import io
import tarfile
from collections.abc import Iterable
from pathlib import Path

MAX_UNPACKED_BYTES = 8 << 30


class PackError(ValueError):
    """A path to pack that is missing or unsafe, or an archive we refuse to unpack."""


def pack(base: Path, paths: Iterable[str], out: Path) -> None:
    """Writes ``paths`` (relative to ``base``; files or folders) into the tar file ``out``."""
    base = base.resolve()
    files: list[tuple[str, Path]] = []
    for rel in paths:
        source = (base / rel).resolve()
        if not source.is_relative_to(base):
            raise PackError(f"{rel}: outside {base}")
        if not source.exists():
            raise PackError(f"{rel}: no such file or folder under {base}")
        candidates = [source] if source.is_file() else sorted(source.rglob("*"))
        links = [p for p in candidates if p.is_symlink()]
        if links:  # a workload's link would have the node read, as itself, outside the task
            raise PackError(f"{links[0].relative_to(base)}: a symbolic link, not packed")
        files += [(p.relative_to(base).as_posix(), p) for p in candidates if p.is_file()]
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tar:
        for name, path in sorted(set(files)):
            info = tarfile.TarInfo(name)
            info.size, info.mode = path.stat().st_size, 0o755 if _executable(path) else 0o644
            with path.open("rb") as data:
                tar.addfile(info, data)


def pack_outputs(workdir: Path, outputs: Iterable[str], out: Path) -> None:
    """Packs what the workload wrote; a declared output that does not exist is skipped."""
    pack(workdir, [p for p in outputs if (workdir / p).exists()], out)


def unpack(archive: Path | bytes, target: Path) -> list[str]:
    """Extracts a tar into ``target`` (created), refusing unsafe members; returns the names."""
    target.mkdir(parents=True, exist_ok=True)
    try:
        source = (
            {"fileobj": io.BytesIO(archive)} if isinstance(archive, bytes) else {"name": archive}
        )
        with tarfile.open(**source) as tar:
            members = tar.getmembers()
            if sum(m.size for m in members) > MAX_UNPACKED_BYTES:
                raise PackError("archive unpacks to more than the limit")
            for member in members:
                if not (member.isfile() or member.isdir()):
                    raise PackError(f"{member.name}: only files and folders are allowed")
            tar.extractall(target, members=members, filter="data")
    except (tarfile.TarError, OSError) as exc:
        raise PackError(f"cannot unpack: {exc}") from exc
    return [m.name for m in members if m.isfile()]


def _executable(path: Path) -> bool:
    return bool(path.stat().st_mode & 0o100)
