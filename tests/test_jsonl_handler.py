"""HiltJSONLHandler: one whole JSON line per event, private files, folders, dated names, rotation, failures."""

from __future__ import annotations

import json
import logging
import os
import stat
from datetime import datetime, timezone
from pathlib import Path

import pytest

import hilt
import hilt._internal
from hilt import Event, HILTError, HiltJSONLHandler, Session

HILT_LOGGER = logging.getLogger("hilt")


def attach(handler: logging.Handler) -> logging.Handler:
    HILT_LOGGER.addHandler(handler)
    return handler


def numbered(i: int, text: str = "") -> Event:
    return Event(session_id="s", action="prompt", content={"text": text or f"event {i}"}, extensions={"seq": i})


def test_one_line_per_event_is_the_event_dict(tmp_log, read_jsonl):
    """Each event is one line holding exactly event.to_dict(), with no logging keys mixed in."""
    attach(HiltJSONLHandler(tmp_log))
    events = [numbered(i) for i in range(3)]
    for event in events:
        hilt.emit(event)
    lines = read_jsonl(tmp_log)
    assert lines == [e.to_dict() for e in events]
    assert not {"levelname", "message", "msg", "name", "asctime"} & set(lines[0])


def test_records_without_an_event_are_not_written(tmp_log, read_jsonl):
    """Plain log records on the 'hilt' logger (no event attached) never reach the JSONL file."""
    attach(HiltJSONLHandler(tmp_log))
    HILT_LOGGER.warning("just a message")
    hilt.emit(numbered(1))
    assert [line["extensions"]["seq"] for line in read_jsonl(tmp_log)] == [1]


def test_file_created_private_and_parent_folders_created(tmp_path):
    """A missing folder chain is created (the last folder 0700) and the log file is created 0600."""
    path = tmp_path / "a" / "b" / "c" / "events.jsonl"
    attach(HiltJSONLHandler(path))
    hilt.emit(numbered(0))
    assert path.is_file()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


def test_session_file_is_private(tmp_log):
    """The file instrument() opens is created 0600."""
    session = hilt.instrument(filepath=tmp_log, providers=[])
    session.append(numbered(0))
    assert stat.S_IMODE(tmp_log.stat().st_mode) == 0o600


def test_delay_opens_at_first_event(tmp_log):
    """delay=True creates nothing until the first event; delay=False creates the file at once."""
    attach(HiltJSONLHandler(tmp_log, delay=True))
    assert not tmp_log.exists()
    hilt.emit(numbered(0))
    assert tmp_log.exists()
    eager = tmp_log.with_name("eager.jsonl")
    HiltJSONLHandler(eager).close()
    assert eager.exists() and eager.stat().st_size == 0


def test_mode_w_truncates_and_mode_a_appends(tmp_log, read_jsonl):
    """mode='w' empties an existing file when opened; mode='a' keeps what is there."""
    tmp_log.parent.mkdir()
    tmp_log.write_text(json.dumps(numbered(0).to_dict()) + "\n")
    appender = attach(HiltJSONLHandler(tmp_log, mode="a"))
    hilt.emit(numbered(1))
    assert [line["extensions"]["seq"] for line in read_jsonl(tmp_log)] == [0, 1]
    HILT_LOGGER.removeHandler(appender)
    appender.close()
    attach(HiltJSONLHandler(tmp_log, mode="w"))
    hilt.emit(numbered(2))
    assert [line["extensions"]["seq"] for line in read_jsonl(tmp_log)] == [2]


def test_date_placeholder_gives_dated_file(tmp_path, read_jsonl):
    """'{date}' in the filename is replaced by today's UTC date (YYYY-MM-DD), folders included."""
    before = datetime.now(timezone.utc).date().isoformat()
    handler = attach(HiltJSONLHandler(tmp_path / "logs-{date}" / "app-{date}.jsonl"))
    event = numbered(7)
    hilt.emit(event)
    after = datetime.now(timezone.utc).date().isoformat()
    candidates = {tmp_path / f"logs-{day}" / f"app-{day}.jsonl" for day in (before, after)}
    written = [p for p in candidates if p.exists()]
    assert len(written) == 1
    assert handler.baseFilename == str(written[0])
    assert read_jsonl(written[0]) == [event.to_dict()]
    assert not any("{date}" in str(p) for p in tmp_path.rglob("*"))


def test_fsync_true_writes_every_line(tmp_log, read_jsonl):
    """fsync=True writes (and syncs) each line; all lines are there and whole."""
    attach(HiltJSONLHandler(tmp_log, fsync=True))
    events = [numbered(i) for i in range(20)]
    for event in events:
        hilt.emit(event)
    assert read_jsonl(tmp_log) == [e.to_dict() for e in events]


def test_instrument_fsync_option(tmp_log, read_jsonl):
    """instrument(fsync=True) writes through a handler with fsync on."""
    session = hilt.instrument(filepath=tmp_log, providers=[], fsync=True)
    assert session.handler.fsync is True
    session.append(numbered(1))
    assert [line["extensions"]["seq"] for line in read_jsonl(tmp_log)] == [1]


def test_file_removed_or_renamed_is_reopened(tmp_log, read_jsonl):
    """After logrotate-style rename or deletion, the next event creates a new file at the path."""
    attach(HiltJSONLHandler(tmp_log))
    hilt.emit(numbered(1))
    moved = tmp_log.with_name("hilt.jsonl.old")
    os.rename(tmp_log, moved)
    hilt.emit(numbered(2))
    assert [line["extensions"]["seq"] for line in read_jsonl(moved)] == [1]
    assert [line["extensions"]["seq"] for line in read_jsonl(tmp_log)] == [2]
    os.remove(tmp_log)
    hilt.emit(numbered(3))
    assert [line["extensions"]["seq"] for line in read_jsonl(tmp_log)] == [3]


def rotated_set(path: Path) -> list[Path]:
    """The file and its numbered backups, oldest first."""
    backups = sorted(
        (p for p in path.parent.glob(path.name + ".*") if p.suffix.lstrip(".").isdigit()),
        key=lambda p: int(p.suffix.lstrip(".")),
        reverse=True,
    )
    return backups + ([path] if path.exists() else [])


def test_size_rotation_keeps_every_line_in_order(tmp_log, read_jsonl):
    """With max_bytes and enough backups, every line lands in the file set, in order, each file under the limit."""
    max_bytes = 2000
    attach(HiltJSONLHandler(tmp_log, max_bytes=max_bytes, backup_count=100))
    for i in range(200):
        hilt.emit(numbered(i))
    files = rotated_set(tmp_log)
    assert len(files) > 5
    assert all(p.stat().st_size <= max_bytes for p in files)
    seqs = [line["extensions"]["seq"] for p in files for line in read_jsonl(p)]
    assert seqs == list(range(200))


def test_size_rotation_drops_only_beyond_backup_count(tmp_log, read_jsonl):
    """backup_count=2 keeps the file plus .1 and .2, holding the newest lines contiguously."""
    attach(HiltJSONLHandler(tmp_log, max_bytes=1500, backup_count=2))
    for i in range(200):
        hilt.emit(numbered(i))
    files = rotated_set(tmp_log)
    assert [p.name for p in files] == ["hilt.jsonl.2", "hilt.jsonl.1", "hilt.jsonl"]
    seqs = [line["extensions"]["seq"] for p in files for line in read_jsonl(p)]
    assert seqs == list(range(200 - len(seqs), 200))


def test_oversized_line_is_written_whole(tmp_log, read_jsonl):
    """A single line larger than max_bytes is still written whole, not split or dropped."""
    attach(HiltJSONLHandler(tmp_log, max_bytes=500, backup_count=3))
    hilt.emit(numbered(0))
    hilt.emit(numbered(1, text="x" * 5000))
    hilt.emit(numbered(2))
    lines = [line for p in rotated_set(tmp_log) for line in read_jsonl(p)]
    assert [line["extensions"]["seq"] for line in lines] == [0, 1, 2]
    assert lines[1]["content"]["text"] == "x" * 5000


# --- bad configuration -------------------------------------------------------------------


def test_directory_as_filename_raises(tmp_path):
    """A directory as filename raises HILTError naming `filename`."""
    with pytest.raises(HILTError, match=r"^filename:.*is a directory"):
        HiltJSONLHandler(tmp_path)


def test_path_under_regular_file_raises(tmp_path):
    """A path whose 'folder' is a regular file raises HILTError naming `filename` and 'is not a folder'."""
    regular = tmp_path / "plain.txt"
    regular.write_text("x")
    with pytest.raises(HILTError, match=r"^filename:.*is not a folder"):
        HiltJSONLHandler(regular / "sub" / "app.jsonl")


def test_missing_folder_without_create_dirs_raises(tmp_path):
    """create_dirs=False with a missing folder raises HILTError naming `filename` and the fix."""
    with pytest.raises(HILTError, match=r"^filename:.*create_dirs=True"):
        HiltJSONLHandler(tmp_path / "missing" / "app.jsonl", create_dirs=False)


@pytest.mark.skipif(os.geteuid() == 0, reason="root bypasses folder permissions")
def test_unwritable_folder_raises(tmp_path):
    """A folder this process can't write raises HILTError naming `filename`."""
    folder = tmp_path / "ro"
    folder.mkdir(mode=0o500)
    try:
        with pytest.raises(HILTError, match=r"^filename:.*not writable"):
            HiltJSONLHandler(folder / "app.jsonl")
    finally:
        folder.chmod(0o700)


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"filename": ""}, "filename"),
        ({"mode": "x"}, "mode"),
        ({"max_bytes": -1}, "max_bytes"),
        ({"max_bytes": 1000}, "backup_count"),
        ({"backup_count": -2}, "backup_count"),
    ],
)
def test_invalid_options_raise_naming_argument(tmp_log, kwargs, argument):
    """Each invalid handler option raises HILTError (a ValueError) whose message starts with the argument's name."""
    options = {"filename": tmp_log, **kwargs}
    with pytest.raises(HILTError, match=rf"^{argument}:") as info:
        HiltJSONLHandler(**options)
    assert isinstance(info.value, ValueError)


# --- failures never reach the caller -----------------------------------------------------


def test_full_disk_never_raises_and_is_reported_once(internal_reports):
    """Writing to /dev/full (ENOSPC) never raises; the first failure is logged on hilt.internal, repeats counted."""
    if not os.path.exists("/dev/full") or not os.access("/dev/full", os.W_OK):
        pytest.skip("/dev/full is not available")
    attach(HiltJSONLHandler("/dev/full"))
    for i in range(3):
        assert hilt.emit(numbered(i)) is None
    reports = [r for r in internal_reports() if "HiltJSONLHandler.emit" in r.getMessage()]
    assert len(reports) == 1
    assert reports[0].levelno == logging.WARNING
    assert reports[0].exc_info is not None and isinstance(reports[0].exc_info[1], OSError)
    counts = hilt._internal.log_repeat_counts()
    assert counts[("OSError", "HiltJSONLHandler.emit")] == 3


def test_full_disk_through_session_append_never_raises(internal_reports):
    """Session('/dev/full').append() returns normally and reports the failure once."""
    if not os.path.exists("/dev/full") or not os.access("/dev/full", os.W_OK):
        pytest.skip("/dev/full is not available")
    session = Session("/dev/full")
    event = numbered(1)
    assert session.append(event) is event
    session.append(numbered(2))
    assert len([r for r in internal_reports() if "OSError" in r.getMessage()]) == 1
    assert hilt._internal.log_repeat_counts()[("OSError", "HiltJSONLHandler.emit")] == 2


def test_write_after_close_never_raises_and_is_reported_once(tmp_log, read_jsonl, internal_reports):
    """Events reaching a closed handler are still written (nothing lost), never raise, are reported once and
    counted after that, and leave no descriptor open."""
    handler = attach(HiltJSONLHandler(tmp_log))
    hilt.emit(numbered(1))
    handler.close()
    handler.close()  # idempotent
    hilt.emit(numbered(2))
    hilt.emit(numbered(3))
    assert [line["extensions"]["seq"] for line in read_jsonl(tmp_log)] == [1, 2, 3]
    reports = [r for r in internal_reports() if "closed handler" in r.getMessage()]
    assert len(reports) == 1
    assert hilt._internal.log_repeat_counts()[("problem", "HiltJSONLHandler.emit")] == 2
    assert handler._fd is None


def test_uninstrument_logs_repeat_count_once(internal_reports):
    """The count of repeated failures is logged once at uninstrument(), after the single first report."""
    if not os.path.exists("/dev/full") or not os.access("/dev/full", os.W_OK):
        pytest.skip("/dev/full is not available")
    session = hilt.instrument(filepath="/dev/full", providers=[])
    for i in range(4):
        session.append(numbered(i))
    hilt.uninstrument()
    messages = [r.getMessage() for r in internal_reports()]
    assert len([m for m in messages if "OSError" in m and "counted, not logged" in m]) == 1
    assert [m for m in messages if "happened" in m] == ["hilt: OSError in HiltJSONLHandler.emit happened 4 times in all"]


def test_handler_close_logs_repeat_count(internal_reports):
    """Closing a handler logs the repeat counts once (DESIGN: counts logged at uninstrument() / handler close)."""
    if not os.path.exists("/dev/full") or not os.access("/dev/full", os.W_OK):
        pytest.skip("/dev/full is not available")
    handler = attach(HiltJSONLHandler("/dev/full"))
    for i in range(3):
        hilt.emit(numbered(i))
    HILT_LOGGER.removeHandler(handler)
    handler.close()
    messages = [r.getMessage() for r in internal_reports()]
    assert any("OSError in HiltJSONLHandler.emit happened 3 times" in m for m in messages)

def test_a_line_torn_by_a_crash_is_ended_before_the_next_event(tmp_log, read_jsonl, internal_reports):
    """A file whose last line a crash cut short: the next writer ends that line first, so its own event is a
    line of its own (glued to the torn one, it would be skipped with it) and the torn one is reported by number."""
    tmp_log.parent.mkdir()
    whole = json.dumps(numbered(0).to_dict())
    tmp_log.write_bytes((whole + "\n" + whole[: len(whole) // 2]).encode())
    attach(HiltJSONLHandler(tmp_log))
    hilt.emit(numbered(1))
    hilt.emit(numbered(2))
    lines = tmp_log.read_bytes().split(b"\n")
    assert lines[1] == whole[: len(whole) // 2].encode() and lines[-1] == b""
    events = list(Session(tmp_log, mode="r").read())
    assert [event.extensions["seq"] for event in events] == [0, 1, 2]
    assert any(f"{tmp_log}:2" in message for message in (r.getMessage() for r in internal_reports()))


def test_a_file_ending_in_a_newline_gets_no_empty_line(tmp_log):
    """The check for a torn line adds nothing to a file that ends as it should."""
    tmp_log.parent.mkdir()
    tmp_log.write_text(json.dumps(numbered(0).to_dict()) + "\n")
    attach(HiltJSONLHandler(tmp_log))
    hilt.emit(numbered(1))
    assert b"\n\n" not in tmp_log.read_bytes()
    assert len(tmp_log.read_bytes().splitlines()) == 2


def test_a_line_a_full_disk_cut_short_is_ended_before_the_next_one(tmp_log, read_jsonl, monkeypatch):
    """The disk fills part-way through a line (reported, never raised): once there is room again the next
    event starts a line of its own, and every line but the cut one reads back."""
    handler = attach(HiltJSONLHandler(tmp_log))
    hilt.emit(numbered(0))
    real_write, calls = os.write, []

    def filling_disk(fd: int, data: bytes) -> int:
        if fd != handler._fd:
            return real_write(fd, data)
        calls.append(len(data))
        if len(calls) == 1:
            return real_write(fd, data[: len(data) // 2])  # half the line, then the disk is full
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "write", filling_disk)
    hilt.emit(numbered(1))
    monkeypatch.setattr(os, "write", real_write)
    hilt.emit(numbered(2))
    lines = tmp_log.read_bytes().split(b"\n")
    assert len(lines) == 4 and lines[-1] == b""  # line 0, the cut line 1, line 2
    assert [event.extensions["seq"] for event in Session(tmp_log, mode="r").read()] == [0, 2]
