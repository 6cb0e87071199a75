"""``HiltJSONLHandler``: one JSON object per line, appended whole, private, rotated by date or size.

Each line reaches the file in a single ``write(2)`` on an ``O_APPEND`` descriptor, so threads
and processes sharing a file never interleave. Size rotation takes a lock file (``flock``), so
several processes can rotate one file set without losing lines.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import time
from datetime import datetime, timezone
from pathlib import Path

from .._internal import report_problem
from ..errors import HILTError
from ..formatting import HiltJSONFormatter
from ._base import HiltHandler

__all__ = ["DATE_PLACEHOLDER", "HiltJSONLHandler"]

DATE_PLACEHOLDER = "{date}"
FILE_MODE = 0o600
DIR_MODE = 0o700
#: How long a file's tail must stay without its newline before a writer takes it for a line torn by a crash.
TORN_CHECK_S = 0.002


def _make_private_dirs(folder: str) -> None:
    """Create ``folder`` and any missing parents, each 0700 (``os.makedirs`` applies the mode to the last only)."""
    missing = []
    while folder and not os.path.isdir(folder):
        missing.append(folder)
        parent = os.path.dirname(folder)
        if parent == folder:
            break
        folder = parent
    for path in reversed(missing):
        try:
            os.mkdir(path, DIR_MODE)
        except FileExistsError:
            pass  # another process or thread made it meanwhile


def _utc_day(now: float) -> tuple[str, float]:
    """Today's UTC date (``YYYY-MM-DD``) and the epoch second the next day starts."""
    day = datetime.fromtimestamp(now, timezone.utc).date()
    start = datetime(day.year, day.month, day.day, tzinfo=timezone.utc).timestamp()
    return day.isoformat(), start + 86400.0


class HiltJSONLHandler(HiltHandler):
    """Append each event as one JSON line to ``filename`` (created 0600, parent folders created 0700).

    Args:
        filename: the file; ``{date}`` in it (``logs/app-{date}.jsonl``) starts a new file each UTC day.
        mode: ``"a"`` to append (default) or ``"w"`` to truncate when first opened.
        encoding: text encoding of the lines.
        delay: open the file at the first event rather than now.
        fsync: ``os.fsync`` after every line, so an acknowledged event survives a power loss.
        max_bytes: rotate when a line would take the file past this size (0: never). Needs ``backup_count``.
        backup_count: how many rotated files (``file.1`` ... ``file.N``) to keep.
        create_dirs: create missing parent folders.

    Raises:
        HILTError: ``filename`` is a directory or its folder can't be written, or an option is invalid.
    """

    def __init__(
        self,
        filename: str | os.PathLike[str],
        mode: str = "a",
        encoding: str = "utf-8",
        delay: bool = False,
        fsync: bool = False,
        max_bytes: int = 0,
        backup_count: int = 0,
        create_dirs: bool = True,
        level: int | str = logging.NOTSET,
    ) -> None:
        super().__init__(level)
        # Registered with logging from here on: if a check below raises, close() (called by
        # logging.shutdown() and by every later dictConfig()) must still work on this half-built handler.
        self._path, self._fd, self._inode, self._closed = "", None, None, False
        if not isinstance(filename, (str, os.PathLike)) or not os.fspath(filename):
            raise HILTError(f"filename: expected a file path such as 'logs/app.jsonl', got {filename!r}")
        if mode not in ("a", "w"):
            raise HILTError(f"mode: {mode!r} is not supported; use 'a' (append) or 'w' (truncate)")
        if not isinstance(max_bytes, int) or max_bytes < 0:
            raise HILTError(f"max_bytes: expected a size in bytes >= 0 (0 turns rotation off), got {max_bytes!r}")
        if not isinstance(backup_count, int) or backup_count < 0:
            raise HILTError(f"backup_count: expected a number of files >= 0, got {backup_count!r}")
        if max_bytes and not backup_count:
            raise HILTError(
                "backup_count: rotation by max_bytes needs backup_count > 0 (how many rotated files to keep)"
            )
        try:
            "".encode(encoding)
        except LookupError as exc:
            raise HILTError(f"encoding: unknown text encoding {encoding!r}; use 'utf-8'") from exc
        self.template = os.path.abspath(os.fspath(filename))
        self.mode = mode
        self.encoding = encoding
        self._utf8 = encoding.lower().replace("-", "").replace("_", "") == "utf8"
        self.fsync = fsync
        self.max_bytes = max_bytes
        self.backup_count = backup_count
        self.create_dirs = create_dirs
        self._dated = DATE_PLACEHOLDER in self.template
        self._day_ends = 0.0
        self._path = self._path_for(time.time())
        self._fd: int | None = None
        self._tail_unchecked = False  # the file's last line must be ended before the next one is written
        self._inode: tuple[int, int] | None = None
        self._truncate_next_open = mode == "w"
        self._closed = False
        self.setFormatter(HiltJSONFormatter())
        self._check_target(self._path)
        if not delay:
            self._open()

    @property
    def baseFilename(self) -> str:
        """The file currently written (the stdlib ``FileHandler`` name, for tools that look for it)."""
        return self._path

    # --- paths -----------------------------------------------------------------------------

    def _path_for(self, now: float) -> str:
        if not self._dated:
            return self.template
        if now >= self._day_ends:
            self._day, self._day_ends = _utc_day(now)
        return self.template.replace(DATE_PLACEHOLDER, self._day)

    def _check_target(self, path: str) -> None:
        if os.path.isdir(path):
            raise HILTError(f"filename: {path!r} is a directory; pass a file path such as 'logs/app.jsonl'")
        folder = Path(path).parent
        existing = folder
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        if not existing.is_dir():
            raise HILTError(f"filename: {str(existing)!r} is not a folder, so {path!r} can't be created there")
        if not folder.exists() and not self.create_dirs:
            raise HILTError(f"filename: folder {str(folder)!r} does not exist; create it or pass create_dirs=True")
        if not os.access(existing, os.W_OK | os.X_OK):
            raise HILTError(
                f"filename: folder {str(existing)!r} is not writable by this process; choose another path "
                "or fix the folder's permissions"
            )

    # --- file ------------------------------------------------------------------------------

    def _open(self) -> None:
        path = self._path
        if self.create_dirs:
            _make_private_dirs(os.path.dirname(path))
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | getattr(os, "O_CLOEXEC", 0)
        if self._truncate_next_open:
            flags |= os.O_TRUNC
        try:
            fd = os.open(path, flags, FILE_MODE)
        except IsADirectoryError as exc:
            raise HILTError(f"filename: {path!r} is a directory; pass a file path such as 'logs/app.jsonl'") from exc
        except PermissionError as exc:
            raise HILTError(f"filename: {path!r} can't be opened for writing ({exc.strerror})") from exc
        self._tail_unchecked = not flags & os.O_TRUNC  # an existing file may end in a line torn by a crash
        self._truncate_next_open = False
        stat = os.fstat(fd)
        self._fd, self._inode = fd, (stat.st_dev, stat.st_ino)

    def _end_torn_line(self, fd: int) -> None:
        """A crash (or a full disk) mid-write can leave the file without its last newline: end that line first,
        so the next event is a line of its own, not glued to the torn one (which readers then report as
        malformed and skip, and the new event with it). If the newline can't be written, the next line tries again."""
        if self._tail_is_torn(fd):
            os.write(fd, b"\n")
        self._tail_unchecked = False

    def _tail_is_torn(self, fd: int) -> bool:
        """The file's last byte is not a newline, and stays so: another process's line may be going into the
        file right now (its size grows page by page during a write), but a crash's torn line does not move."""
        try:
            reader = os.open(self._path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
            try:
                size, last = self._last_byte(fd, reader)
                if last in (b"\n", b""):
                    return False
                time.sleep(TORN_CHECK_S)
                return self._last_byte(fd, reader) == (size, last)
            finally:
                os.close(reader)
        except OSError:
            return False  # unreadable (a write-only file): lines are still written whole

    def _finish_line(self, fd: int, data: bytes, written: int) -> None:
        """A short write (disk nearly full): finish the line, never tear it silently; if the rest can't be
        written, the next line is started on a line of its own."""
        self._tail_unchecked = True
        while written < len(data):
            step = os.write(fd, data[written:])
            if step == 0:
                raise OSError(errno.ENOSPC, "no space left for the rest of the line", self._path)
            written += step
        self._tail_unchecked = False

    @staticmethod
    def _last_byte(fd: int, reader: int) -> tuple[int, bytes]:
        size = os.fstat(fd).st_size
        return size, os.pread(reader, 1, size - 1) if size else b""

    def _close_fd(self) -> None:
        fd, self._fd, self._inode = self._fd, None, None
        if fd is not None:
            os.close(fd)

    def _current_fd(self, size: int) -> int:
        """The descriptor to write ``size`` bytes to: reopened after a day change, a rotation or a deletion."""
        path = self._path_for(time.time()) if self._dated else self._path
        if path != self._path:
            self._close_fd()
            self._path = path
        if self._fd is not None:
            try:
                stat = os.stat(path)
                moved = (stat.st_dev, stat.st_ino) != self._inode
            except FileNotFoundError:
                moved = True  # deleted or rotated away by another process or logrotate
            if moved:
                self._close_fd()
        if self._fd is None:
            self._open()
        if self.max_bytes:
            self._maybe_rotate(size)
        assert self._fd is not None
        return self._fd

    def _maybe_rotate(self, size: int) -> None:
        assert self._fd is not None
        current = os.fstat(self._fd).st_size
        if current == 0 or current + size <= self.max_bytes:
            return
        lock_path = os.path.join(os.path.dirname(self._path), "." + os.path.basename(self._path) + ".lock")
        lock_fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), FILE_MODE)
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX)
            try:
                stat = os.stat(self._path)
            except FileNotFoundError:
                stat = None
            # Another process may have rotated while we waited: then just write to the new file.
            if stat is not None and (stat.st_dev, stat.st_ino) == self._inode and stat.st_size + size > self.max_bytes:
                self._rotate_files()
            self._close_fd()
            self._open()
        finally:
            fcntl.flock(lock_fd, fcntl.LOCK_UN)
            os.close(lock_fd)

    def _rotate_files(self) -> None:
        for index in range(self.backup_count - 1, 0, -1):
            source = f"{self._path}.{index}"
            if os.path.exists(source):
                os.replace(source, f"{self._path}.{index + 1}")
        os.replace(self._path, f"{self._path}.1")

    # --- logging.Handler -------------------------------------------------------------------

    def emit(self, record: logging.LogRecord) -> None:
        try:
            closed = self._closed
            if closed:
                # logging.config.dictConfig() closes every handler, even ones it does not configure. Rather
                # than lose the audit trail, write the line with a short-lived open (so a closed handler never
                # holds a descriptor), and say so once.
                report_problem(
                    f"{type(self).__name__}.emit",
                    "an event reached the closed handler for %s (logging.config.dictConfig closes all handlers); "
                    "it was written, nothing is lost",
                    self._path,
                )
            formatter = self.formatter
            if isinstance(formatter, HiltJSONFormatter) and self._utf8:
                data = formatter.format_line(record)
            else:
                data = (self.format(record) + "\n").encode(self.encoding, "backslashreplace")
            fd = self._current_fd(len(data))
            if self._tail_unchecked:
                self._end_torn_line(fd)
            try:
                written = os.write(fd, data)
                if written < len(data):
                    self._finish_line(fd, data, written)
                if self.fsync:
                    os.fsync(fd)
            finally:
                if closed:
                    self._close_fd()
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)

    def flush(self) -> None:
        """Lines are written straight to the file; with ``fsync`` each is already on disk."""

    def close(self) -> None:
        """Close the file; idempotent. A later event is still written, with a short-lived open (reported once)."""
        with self.lock:
            try:
                self._closed = True
                self._close_fd()
            finally:
                super().close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._path} ({logging.getLevelName(self.level)})>"
