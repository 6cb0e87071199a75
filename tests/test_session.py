"""Session: append through the pipeline, read back, and how unreadable lines are skipped, reported or raised."""

from __future__ import annotations

import gzip
import json

import pytest

import hilt
from hilt import Event, HILTError, Session


def line_of(i: int) -> bytes:
    event = Event(session_id="s", action="prompt", content={"text": f"t{i}"}, extensions={"seq": i})
    return json.dumps(event.to_dict()).encode() + b"\n"


def write(path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def test_append_then_read_in_order(tmp_log):
    """Events appended to a Session are read back in file order as Event objects."""
    with Session(tmp_log) as session:
        appended = [session.append(Event(action="feedback", content={"text": str(i)})) for i in range(5)]
        assert [e.event_id for e in session.read()] == [e.event_id for e in appended]
    assert [e.content.text for e in Session(tmp_log, mode="r")] == ["0", "1", "2", "3", "4"]


def test_mode_w_truncates(tmp_log, read_jsonl):
    """Session(path, mode='w') starts the file afresh at its first append."""
    write(tmp_log, line_of(0) + line_of(1))
    with Session(tmp_log, mode="w") as session:
        session.append(Event(action="feedback", extensions={"seq": 9}))
    assert [line["extensions"]["seq"] for line in read_jsonl(tmp_log)] == [9]


def test_torn_last_line_skipped_and_reported(tmp_log, internal_reports):
    """A torn last line (no newline, cut JSON) is skipped and reported on hilt.internal as path:line."""
    write(tmp_log, line_of(0) + line_of(1) + line_of(2)[:40])
    events = list(Session(tmp_log, mode="r").read())
    assert [e.extensions["seq"] for e in events] == [0, 1]
    messages = [r.getMessage() for r in internal_reports()]
    assert len(messages) == 1
    assert f"{tmp_log}:3" in messages[0] and "torn" in messages[0]


def test_malformed_middle_line_reported_with_line_number(tmp_log, internal_reports):
    """A malformed line in the middle is skipped, the rest read, and reported with path:line."""
    write(tmp_log, line_of(0) + b"{not json\n" + b"\n" + line_of(3) + b'{"action": "Bad Action"}\n' + line_of(5))
    events = list(Session(tmp_log, mode="r").read())
    assert [e.extensions["seq"] for e in events] == [0, 3, 5]
    messages = [r.getMessage() for r in internal_reports()]
    assert len(messages) == 2
    assert f"{tmp_log}:2: malformed line" in messages[0]
    assert f"{tmp_log}:5: malformed line" in messages[1] and "action" in messages[1]


def test_every_read_reports_its_bad_lines(tmp_log, internal_reports):
    """Reading the same damaged file twice reports its bad line both times (reports are per read, not per process)."""
    write(tmp_log, line_of(0) + b"[1, 2]\n" + line_of(2))
    for _ in range(2):
        assert len(list(Session(tmp_log, mode="r").read())) == 2
    assert [r.getMessage().count(f"{tmp_log}:2") for r in internal_reports()] == [1, 1]


def test_strict_raises_naming_path_and_line(tmp_log):
    """read(strict=True) raises HILTError naming path:line at the first malformed line."""
    write(tmp_log, line_of(0) + b"{oops\n" + line_of(2))
    reader = Session(tmp_log, mode="r").read(strict=True)
    assert next(reader).extensions["seq"] == 0
    with pytest.raises(HILTError, match=rf"^{tmp_log}:2: malformed line"):
        next(reader)


def test_strict_raises_on_torn_last_line(tmp_log):
    """read(strict=True) also raises on a torn last line, naming path:line."""
    write(tmp_log, line_of(0) + line_of(1)[:-10])
    with pytest.raises(HILTError, match=rf"{tmp_log}:2: torn last line"):
        list(Session(tmp_log, mode="r").read(strict=True))


def test_gzip_file_is_read(tmp_path):
    """A gzip-compressed log (rotated and compressed) reads like a plain one."""
    path = tmp_path / "old.jsonl.gz"
    with gzip.open(path, "wb") as handle:
        handle.write(line_of(0) + line_of(1) + line_of(2))
    assert [e.extensions["seq"] for e in Session(path, mode="r").read()] == [0, 1, 2]


def test_mode_r_on_missing_file_raises(tmp_path):
    """Session(missing, mode='r') raises HILTError naming `path`."""
    with pytest.raises(HILTError, match=r"^path:.*mode='r'"):
        Session(tmp_path / "missing.jsonl", mode="r")


def test_append_on_read_only_session_raises(tmp_log):
    """append() on a mode='r' session raises HILTError naming `append`, and the file is unchanged."""
    original = line_of(0)
    write(tmp_log, original)
    session = Session(tmp_log, mode="r")
    with pytest.raises(HILTError, match=r"^append:.*mode='r'"):
        session.append(Event())
    assert tmp_log.read_bytes() == original


def test_append_rejects_non_events(tmp_log):
    """append() of something that is not an Event raises HILTError naming `append`."""
    with pytest.raises(HILTError, match=r"^append:"):
        Session(tmp_log).append({"action": "prompt"})  # type: ignore[arg-type]


def test_unknown_mode_raises(tmp_log):
    """An unknown mode raises HILTError naming `mode`."""
    with pytest.raises(HILTError, match=r"^mode:"):
        Session(tmp_log, mode="x")


def test_read_of_not_yet_written_append_session_is_empty(tmp_log):
    """read() on an append session whose file does not exist yet yields nothing."""
    assert list(Session(tmp_log).read()) == []
    assert not tmp_log.exists()


def test_session_handler_options_pass_through(tmp_log):
    """Session(path, max_bytes=..., backup_count=...) configures its file handler."""
    session = Session(tmp_log, max_bytes=4096, backup_count=3, fsync=True)
    assert (session.handler.max_bytes, session.handler.backup_count, session.handler.fsync) == (4096, 3, True)
    with pytest.raises(HILTError, match=r"^backup_count:"):
        Session(tmp_log, max_bytes=4096)


def test_uninstrumented_session_writes_own_file_only(tmp_path, read_jsonl):
    """A standalone Session writes to its own file even while another session is instrumented, and not to it."""
    main_log = tmp_path / "main.jsonl"
    side_log = tmp_path / "side.jsonl"
    main = hilt.instrument(filepath=main_log, providers=[])
    side = Session(side_log)
    side_event = side.append(Event(action="feedback", content={"text": "side"}))
    main_event = main.append(Event(action="feedback", content={"text": "main"}))
    hilt.emit(Event(action="feedback", content={"text": "emitted"}))
    assert [line["event_id"] for line in read_jsonl(side_log)] == [side_event.event_id]
    assert [line["content"]["text"] for line in read_jsonl(main_log)] == ["main", "emitted"]
    assert main_event.event_id in {line["event_id"] for line in read_jsonl(main_log)}
