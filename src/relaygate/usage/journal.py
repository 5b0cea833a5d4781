"""The ledger's append-only local journal: what makes a record durable before the answer's
last byte leaves.

One JSON line per record; the records of one turn of the event loop are appended with a
single write(2) (`append_many`, the ledger's group commit: in the page cache at once, so
they survive `kill -9`; fsynced at least every second by the ledger, so they survive a
crash of the machine within that second). Records go to the active segment
(`usage-<ns>-<pid>.jsonl`, held under an exclusive `flock`); the ledger rotates it, then
writes closed segments to the database and deletes them. A segment nobody holds a lock on
is closed: left over by a process that died, or rotated by a live one, and any process may
flush it (inserts are idempotent, so two flushing the same segment is harmless).

The writer also keeps each record it appends in memory with its segment (up to
`max_bytes` of a segment), so it can flush the segments it wrote itself without reading them back and
parsing them; only segments left by other processes (or too big) are read from disk.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Generic, TypeVar

PREFIX = "usage-"
SUFFIX = ".jsonl"
T = TypeVar("T")


class Journal(Generic[T]):
    """`T`: the in-memory form of a line (the ledger's `UsageRecord`)."""

    def __init__(self, directory: str | Path, max_bytes: int = 8 * 1024 * 1024) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes  # a segment bigger than this is not kept in memory
        self._lock = asyncio.Lock()  # rotation vs the periodic fsync of the same fd
        self._fd = -1
        self._path: Path | None = None
        self._size = 0
        self._dirty = False
        # the active segment's items, one per line; None once a line came without its item
        self._items: list[T] | None = []
        self._kept: dict[Path, list[T]] = {}  # closed segments of this process, not yet taken
        self._open_segment()

    def _open_segment(self) -> None:
        path = self.dir / f"{PREFIX}{time.time_ns():020d}-{os.getpid()}{SUFFIX}"
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if self._path is not None and self._items is not None:
            self._kept[self._path] = self._items
        self._fd, self._path, self._size, self._items = fd, path, 0, []
        self._new_entry = True  # the directory entry is made durable by the next sync

    @property
    def active(self) -> Path | None:
        return self._path

    @property
    def pending_bytes(self) -> int:
        return self._size

    def append(self, line: bytes, item: T | None = None) -> None:
        """One record (see `append_many`)."""
        self.append_many([line if line.endswith(b"\n") else line + b"\n"], None if item is None else [item])

    def append_many(self, lines: list[bytes], items: list[T] | None) -> None:
        """Records, each line newline-terminated, in one write(2) (the ledger's group
        commit). Raises OSError (disk full) for the caller to handle. `items` (what the
        lines encode, one each) are kept with the segment for `take_closed`; None: the
        segment will be read back from disk."""
        data = lines[0] if len(lines) == 1 else b"".join(lines)
        n = os.write(self._fd, data)
        if n < len(data):  # a regular file takes it all unless the disk is full: then this raises
            _write_all(self._fd, memoryview(data)[n:])
        self._size += len(data)
        self._dirty = True
        if self._items is not None:
            if items is None or self._size > self.max_bytes:
                self._items = None  # this segment will be read back from disk
            else:
                self._items.extend(items)

    async def sync(self) -> None:
        """fsync the active segment if anything was written since the last sync."""
        async with self._lock:
            if not self._dirty or self._fd < 0:
                return
            self._dirty = False
            new_entry, self._new_entry = self._new_entry, False
            await asyncio.to_thread(self._fsync, self._fd, new_entry)

    def _fsync(self, fd: int, directory: bool) -> None:
        os.fsync(fd)
        if directory:  # a new segment's name must survive a crash too, not only its bytes
            dfd = os.open(self.dir, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)

    async def rotate(self) -> bool:
        """Closes the active segment (fsynced) and opens a new one; False when it was empty."""
        async with self._lock:
            if self._size == 0 or self._fd < 0:
                return False
            old = self._fd
            self._open_segment()
            self._dirty = False
            await asyncio.to_thread(_sync_close, old)
            return True

    async def close(self) -> None:
        async with self._lock:
            if self._fd < 0:
                return
            fd, path, size = self._fd, self._path, self._size
            self._fd, self._path = -1, None
            await asyncio.to_thread(_sync_close, fd)
            if size == 0 and path is not None:
                path.unlink(missing_ok=True)

    def closed_segments(self) -> list[Path]:
        return sorted(p for p in self.dir.glob(f"{PREFIX}*{SUFFIX}") if p != self._path)

    def take_closed(self) -> list[tuple[Path, list[T] | None]]:
        """Every closed segment, oldest first, with the items this process appended to it
        (line for line), or None when it must be read from disk (left by another process,
        too big, or appended to without items). Hands the items over: a later call returns
        None for a segment still there (its flush failed), so memory never piles up."""
        kept, self._kept = self._kept, {}
        return [(p, kept.get(p)) for p in self.closed_segments()]

    def backlog_bytes(self) -> int:
        total = 0
        for p in self.closed_segments():
            try:
                total += p.stat().st_size
            except FileNotFoundError:
                pass
        return total + self._size


def _write_all(fd: int, view: memoryview) -> None:
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _sync_close(fd: int) -> None:
    try:
        os.fsync(fd)
    finally:
        os.close(fd)  # closing releases the flock: the segment is now flushable


@contextmanager
def claim(path: Path, read: bool = True) -> Iterator[bytes | None]:
    """Locks a closed segment for flushing and yields its bytes (b"" when not `read`);
    None when another process holds it (its active segment, or it is flushing it) or it
    is gone."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        yield None
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield None
            return
        if os.fstat(fd).st_nlink == 0:  # flushed and deleted by someone else meanwhile
            yield None
            return
        if not read:
            yield b""
            return
        chunks = []
        while True:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                break
            chunks.append(chunk)
        yield b"".join(chunks)
    finally:
        os.close(fd)
