"""What the log-reading commands share: turning FILE arguments into files, opening plain or gzip logs."""

from __future__ import annotations

import glob
import gzip
import os
import re
from typing import IO

__all__ = ["CLIError", "expand", "guard_read_error", "is_gzip", "open_log"]

_GLOB_CHARS = re.compile(r"[*?\[]")
_ROTATED = re.compile(r"^(.*?)\.(\d+)$")


class CLIError(Exception):
    """A problem with the command's input, printed as one line on stderr (no traceback)."""

    def __init__(self, message: str, status: int = 2) -> None:
        super().__init__(message)
        self.status = status


def _rotation_key(path: str) -> tuple[str, int, str]:
    """Sort a rotated set oldest first: ``app.jsonl.3.gz``, ``app.jsonl.2``, ``app.jsonl.1``, ``app.jsonl``."""
    name = path[:-3] if path.endswith(".gz") else path
    match = _ROTATED.match(name)
    if match:
        return (match.group(1), -int(match.group(2)), path)
    return (name, 0, path)


def expand(arguments: list[str]) -> list[str]:
    """The files named by ``arguments`` (paths or globs), rotated sets oldest first, each once.

    Raises:
        CLIError: a missing file, a directory, or a glob that matches nothing.
    """
    files: list[str] = []
    for argument in arguments:
        if os.path.isdir(argument):
            raise CLIError(f"{argument}: is a directory; pass log files, e.g. '{os.path.join(argument, '*.jsonl*')}'")
        if os.path.exists(argument):
            found = [argument]
        elif _GLOB_CHARS.search(argument):
            found = sorted((p for p in glob.glob(argument) if os.path.isfile(p)), key=_rotation_key)
            if not found:
                raise CLIError(f"{argument}: no file matches this pattern")
        else:
            raise CLIError(f"{argument}: no such file")
        for path in found:
            if path not in files:
                files.append(path)
    return files


def is_gzip(path: str) -> bool:
    """True when the file starts with the gzip magic bytes (rotated ``.gz`` logs), whatever its name."""
    with open(path, "rb") as probe:
        return probe.read(2) == b"\x1f\x8b"


def open_log(path: str) -> IO[bytes]:
    """Open a log for reading bytes, decompressing gzip files.

    Raises:
        CLIError: the file cannot be opened (permissions, a special file).
    """
    try:
        if is_gzip(path):
            return gzip.open(path, "rb")  # type: ignore[return-value]
        return open(path, "rb")
    except OSError as exc:
        raise CLIError(f"{path}: cannot open: {exc.strerror or exc}") from None


def guard_read_error(path: str, exc: BaseException) -> CLIError:
    """The message for an error raised while reading ``path`` (a corrupt or truncated gzip file, I/O)."""
    if isinstance(exc, (gzip.BadGzipFile, EOFError)):
        return CLIError(f"{path}: corrupt or truncated gzip file ({exc or type(exc).__name__})", status=1)
    if isinstance(exc, OSError):
        return CLIError(f"{path}: read error: {exc.strerror or exc}", status=1)
    return CLIError(f"{path}: {exc}", status=1)
