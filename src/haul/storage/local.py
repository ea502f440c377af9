"""Uploads as plain files under ``<data dir>/uploads``.

A single upload is one file, whose size is its offset. A final (concatenated) upload is a
directory ``<id>.parts`` of hard links to its partials' files, in order: concatenation copies
no byte and costs the same for 1 KiB and 1 TiB; reads chain the segments.

A request that must be all-or-nothing (it carries a checksum) first leaves a small ``.pending``
marker holding the offset it started from: while the marker exists those bytes do not count,
and if the process dies the next writer truncates them away.
Blocking calls run in worker threads so the event loop never waits on the disk.
"""

from __future__ import annotations

import asyncio
import errno
import os
import re
import shutil
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import TypeVar

from haul.core.interfaces import StoredBytesMissing
from haul.errors import OffsetMismatch, StorageFull

T = TypeVar("T")

READ_BLOCK = 1 << 20
_IOV_MAX = os.sysconf("SC_IOV_MAX") if hasattr(os, "sysconf") else 1024
_SUFFIXES = (".pending", ".assembling", ".parts", ".old")
_ID = re.compile(r"[0-9a-f]{32}")


async def _off_loop(func: Callable[[], T]) -> T:
    work = asyncio.ensure_future(asyncio.to_thread(func))
    try:
        return await asyncio.shield(work)
    except asyncio.CancelledError:
        # A thread cannot be stopped: it must be done before the caller moves on (a discard
        # truncating the file under a write would leave bytes past the offset).
        await asyncio.wait([work])
        raise
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise StorageFull("the server's storage is full; try again later") from exc
        raise


class LocalWriter:
    def __init__(self, fd: int, start: int, marker: Path, fsync: bool) -> None:
        self._fd = fd
        self._start = start
        self._marker = marker
        self._fsync = fsync
        self._closed = False

    async def write(self, pieces: Sequence[bytes]) -> None:
        await _off_loop(lambda: self._write_all(pieces))

    def _write_all(self, pieces: Sequence[bytes]) -> None:
        # writev hands the kernel the pieces as they came off the socket: no joining copy.
        views = [memoryview(p) for p in pieces if p]
        while views:
            written = os.writev(self._fd, views[:_IOV_MAX])
            while views and written >= len(views[0]):
                written -= len(views[0])
                views.pop(0)
            if written:
                views[0] = views[0][written:]

    async def commit(self) -> int:
        return await _off_loop(self._commit)

    def _commit(self) -> int:
        if self._fsync:
            os.fsync(self._fd)
        size = os.fstat(self._fd).st_size
        self._close()
        return size

    async def discard(self) -> None:
        await asyncio.to_thread(self._discard)

    def _discard(self) -> None:
        if self._closed:
            return
        os.ftruncate(self._fd, self._start)
        self._close()

    def _close(self) -> None:
        if not self._closed:
            self._closed = True
            os.close(self._fd)
            self._marker.unlink(missing_ok=True)


class LocalStorage:
    reads_while_writing = True

    def __init__(self, root: Path, *, fsync: bool = True) -> None:
        self.root = root
        self.fsync = fsync
        root.mkdir(parents=True, exist_ok=True)

    def _path(self, upload_id: str, suffix: str = "") -> Path:
        return self.root / f"{upload_id}{suffix}"

    # A marker reads "<offset> <atomic>"; non-atomic markers only note that a writer was open.
    def _marker_offset(self, upload_id: str) -> int | None:
        try:
            text = self._path(upload_id, ".pending").read_text()
        except FileNotFoundError:
            return None
        start, _, atomic = text.partition(" ")
        return int(start) if atomic.strip() == "1" and start.isdigit() else None

    def _segments(self, upload_id: str) -> list[tuple[Path, int]]:
        """The files holding the upload's bytes, in order, with their sizes.

        Looked for in this order: ``<id>.parts/``, ``<id>``, ``<id>.old/``. Every step of
        :meth:`_share` leaves a complete representation first in that order, so a crash at any
        point never exposes a half-replaced upload."""
        try:
            for suffix in (".parts", "", ".old"):
                path = self._path(upload_id, suffix)
                if suffix and path.is_dir():
                    return [(p, p.stat().st_size) for p in sorted(path.iterdir())]
                if not suffix and path.is_file():
                    return [(path, path.stat().st_size)]
        except FileNotFoundError:  # deleted while we looked
            pass
        raise StoredBytesMissing(f"upload {upload_id} has no stored bytes")

    def _offset(self, upload_id: str) -> int:
        if self._path(upload_id, ".parts").is_dir() or self._path(upload_id, ".old").is_dir():
            return sum(size for _, size in self._segments(upload_id))
        # Marker, size, marker: a writer that discards truncates before removing its marker,
        # so whichever order the reads interleave with it, uncommitted bytes are never counted.
        before = self._marker_offset(upload_id)
        try:
            size = self._path(upload_id).stat().st_size
        except FileNotFoundError:
            size = 0
        after = self._marker_offset(upload_id)
        for start in (before, after):
            if start is not None:
                size = min(size, start)
        return size

    def _room(self, upload_id: str) -> None:
        """The folders of an upload stored below a storage key (``a/b/<id>``)."""
        if "/" in upload_id:
            self._path(upload_id).parent.mkdir(parents=True, exist_ok=True)

    async def create(self, upload_id: str, length: int | None = None) -> None:
        def make() -> None:
            self._room(upload_id)
            self._path(upload_id).touch(mode=0o640)

        await _off_loop(make)

    async def offset(self, upload_id: str) -> int:
        return await asyncio.to_thread(self._offset, upload_id)

    async def open_writer(self, upload_id: str, offset: int, *, atomic: bool) -> LocalWriter:
        return await _off_loop(lambda: self._open_writer(upload_id, offset, atomic))

    def _open_writer(self, upload_id: str, offset: int, atomic: bool) -> LocalWriter:
        marker = self._path(upload_id, ".pending")
        self._room(upload_id)
        fd = os.open(self._path(upload_id), os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o640)
        try:
            leftover = self._marker_offset(upload_id)
            if leftover is not None:  # a checksummed write died half way: forget its bytes
                os.ftruncate(fd, leftover)
            marker.unlink(missing_ok=True)
            size = os.fstat(fd).st_size
            if size != offset:
                raise OffsetMismatch(f"the upload's offset is {size}, the request says {offset}")
            marker.write_text(f"{offset} {int(atomic)}")
            os.lseek(fd, offset, os.SEEK_SET)
        except BaseException:
            os.close(fd)
            raise
        return LocalWriter(fd, offset, marker, self.fsync)

    async def concatenate(self, upload_id: str, part_ids: Sequence[str]) -> None:
        await _off_loop(lambda: self._concatenate(upload_id, part_ids))

    def _concatenate(self, upload_id: str, part_ids: Sequence[str]) -> None:
        # Hard links in a staging directory, renamed into place: all or nothing, and O(1) per
        # part. Deleting a partial afterwards only drops its own name for the bytes.
        staging = self._path(upload_id, ".assembling")
        shutil.rmtree(staging, ignore_errors=True)
        self._room(upload_id)
        staging.mkdir()
        index = 0
        for part_id in part_ids:
            try:  # a partial stored once with another upload is itself a directory of segments
                for path, _ in self._segments(part_id):
                    os.link(path, staging / f"{index:06d}")
                    index += 1
            except (StoredBytesMissing, FileNotFoundError):
                shutil.rmtree(staging, ignore_errors=True)
                raise StoredBytesMissing(f"partial upload {part_id} has no stored bytes") from None
        if self.fsync:
            fd = os.open(staging, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        target, old = self._path(upload_id, ".parts"), self._path(upload_id, ".old")
        if target.is_dir():  # assembled before by a request that died before its record said so
            shutil.rmtree(old, ignore_errors=True)
            os.rename(target, old)  # the same bytes, still found there until the next rename
        os.rename(staging, target)
        shutil.rmtree(old, ignore_errors=True)
        self._path(upload_id).unlink(missing_ok=True)

    async def share(self, source_id: str, upload_id: str) -> bool:
        return await _off_loop(lambda: self._share(source_id, upload_id))

    def _share(self, source_id: str, upload_id: str) -> bool:
        # Hard links again: the upload costs no space of its own, and deleting either upload
        # only drops its own names; the kernel's link count keeps the bytes while one is left.
        parts, plain, old = (self._path(upload_id, s) for s in (".parts", "", ".old"))
        staging = self._path(upload_id, ".assembling")
        shutil.rmtree(staging, ignore_errors=True)
        staging.unlink(missing_ok=True)
        self._room(upload_id)
        try:
            segments = self._segments(source_id)
            if len(segments) == 1 and not self._path(source_id, ".parts").is_dir():
                os.link(segments[0][0], staging)
            else:
                staging.mkdir()
                for path, _ in segments:
                    os.link(path, staging / path.name)
        except (StoredBytesMissing, FileNotFoundError):  # gone, or going while we link
            shutil.rmtree(staging, ignore_errors=True)
            staging.unlink(missing_ok=True)
            return False
        # Each step below leaves a complete representation first in _segments' order.
        if parts.is_dir():
            plain.unlink(missing_ok=True)  # only ever an empty placeholder beside .parts
            shutil.rmtree(old, ignore_errors=True)
            if staging.is_dir():
                os.rename(parts, old)  # now .old holds the bytes
                os.rename(staging, parts)  # now the shared .parts does
            else:
                os.rename(staging, plain)  # .parts still first, same content
                os.rename(parts, old)  # now the shared file is first
            shutil.rmtree(old, ignore_errors=True)
        elif staging.is_dir():
            os.rename(staging, parts)
            plain.unlink(missing_ok=True)
        else:
            os.replace(staging, plain)
        return True

    async def read(self, upload_id: str, start: int, end: int) -> AsyncIterator[bytes]:
        segments = await asyncio.to_thread(self._segments, upload_id)
        base = 0
        for path, size in segments:
            first, last = max(start, base), min(end, base + size)
            if first < last:
                async for block in self._read_file(path, first - base, last - base):
                    yield block
            base += size

    async def _read_file(self, path: Path, start: int, end: int) -> AsyncIterator[bytes]:
        try:
            fd = await asyncio.to_thread(os.open, path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:  # deleted between listing its segments and opening them
            raise StoredBytesMissing(f"{path.name} is no longer stored") from None
        try:
            position = start
            while position < end:
                size = min(READ_BLOCK, end - position)
                block = await asyncio.to_thread(os.pread, fd, size, position)
                if not block:
                    raise OSError(errno.EIO, f"{path} is shorter than recorded")
                position += len(block)
                yield block
        finally:
            os.close(fd)

    async def finish(self, upload_id: str) -> None:
        """A file is readable as it grows: nothing to do."""

    async def open(self) -> None:
        """Nothing to connect to."""

    async def close(self) -> None:
        """Nothing to release."""

    async def delete(self, upload_id: str) -> None:
        def remove() -> None:
            for suffix in ("", *_SUFFIXES):
                path = self._path(upload_id, suffix)
                if path.is_dir():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)
            folder = self._path(upload_id).parent
            while folder != self.root:  # a storage key's folders go with their last upload
                try:
                    folder.rmdir()
                except OSError:  # not empty (another upload), or gone
                    break
                folder = folder.parent

        await asyncio.to_thread(remove)

    async def stored_ids(self) -> AsyncIterator[tuple[str, float]]:
        def scan(folder: Path, prefix: str, found: dict[str, float]) -> dict[str, float]:
            with os.scandir(folder) as entries:
                for entry in entries:
                    name = entry.name
                    for suffix in _SUFFIXES:
                        name = name.removesuffix(suffix)
                    if name == entry.name and not _ID.fullmatch(name) and entry.is_dir():
                        scan(Path(entry.path), f"{prefix}{name}/", found)  # a storage key
                        continue
                    try:
                        changed = entry.stat().st_mtime
                    except FileNotFoundError:
                        continue
                    found[prefix + name] = max(changed, found.get(prefix + name, 0.0))
            return found

        def scan_all() -> list[tuple[str, float]]:
            return list(scan(self.root, "", {}).items())

        for item in await asyncio.to_thread(scan_all):
            yield item
