"""Hostile input: any text round-trips, each event stays one line, garbage never crashes a read.

What the writer does (``hilt/formatting.py``): orjson writes UTF-8 and escapes every control
character below U+0020 (so ``\\n``, ``\\r``, NUL, U+000B/000C/001C-001E never appear raw); hilt then
replaces raw U+2028, U+2029 and U+0085 with ``\\u2028``, ``\\u2029``, ``\\u0085``. Text orjson refuses
(lone surrogates) goes through stdlib ``json.dumps(ensure_ascii=True)``: the whole line is ASCII and
the surrogate is written as ``\\udXXX``, which the reader's stdlib fallback turns back into the same
string. So every line is valid strict UTF-8, and ``str.splitlines()`` on it gives exactly one line.
"""

from __future__ import annotations

import io
import json
import logging
import re
import uuid
from pathlib import Path

import pytest

hypothesis = pytest.importorskip("hypothesis")

import openai  # noqa: E402
from hypothesis import HealthCheck, example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import hilt  # noqa: E402
import hilt.cli  # noqa: E402
from hilt.handlers.jsonl import HiltJSONLHandler  # noqa: E402
from hilt.testing import OpenAIServer, ScriptedReply  # noqa: E402

SPECIALS = [
    "\ud800", "\udbff", "\udc00", "\udfff",  # lone surrogates
    "\x00", "\n", "\r", "\r\n", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029",  # line breaks
    "\u200e", "\u200f", "\u202a", "\u202b", "\u202e", "\u2066", "\u2069", "\ufeff", "\ufffe", "\uffff",  # bidi etc.
    '"', "\\", "\\u2028", "[HILT_AUDIT] ", "\U0010ffff", "\U0001f600", "é", "\u0301",
]
# Every code point, surrogates included (st.characters() leaves category Cs out by default).
ANY_CHAR = st.characters(codec=None, exclude_categories=())
# A high surrogate directly followed by a low one does not round-trip (a documented limit, tested below): keep them apart.
_PAIR = re.compile("([\ud800-\udbff])(?=[\udc00-\udfff])")
HOSTILE_TEXT = st.lists(st.one_of(st.sampled_from(SPECIALS), ANY_CHAR, st.text(ANY_CHAR, max_size=8)), max_size=24).map(
    lambda parts: _PAIR.sub("\\1|", "".join(parts))
)

# derandomize: the same examples every run (no flaky finds, no example database written to the checkout).
SETTINGS = settings(
    max_examples=300, deadline=None, derandomize=True, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)


def _write(path: Path, *events: hilt.Event) -> bytes:
    """Events through a fresh HiltJSONLHandler (the real logging path); the file's bytes."""
    handler = HiltJSONLHandler(path, mode="w")
    try:
        for event in events:
            record = logging.LogRecord("hilt", logging.INFO, "hilt", 0, "hilt %s", (event.action,), None)
            record.hilt_event = event
            handler.handle(record)
    finally:
        handler.close()
    return path.read_bytes()


def _fresh_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.getbasetemp() / "hostile" / f"{uuid.uuid4().hex}.jsonl"


def _assert_one_line_each(raw: bytes, count: int) -> None:
    """Exactly ``count`` lines by every reading: bytes split on b"\\n", strict UTF-8 splitlines()."""
    assert raw.endswith(b"\n")
    assert raw.count(b"\n") == count
    text = raw.decode("utf-8")  # strict: the writer never leaves a raw surrogate or invalid UTF-8
    lines = text.splitlines()
    assert len(lines) == count
    for line in lines:
        for char in ("\r", "\x00", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029"):
            assert char not in line
        json.loads(line)


@SETTINGS
@given(text=HOSTILE_TEXT, message=HOSTILE_TEXT, value=HOSTILE_TEXT, key=HOSTILE_TEXT)
@example(text="\n[HILT_AUDIT] {\"forged\": true}", message="\u2028\u2029\x85", value="\ud800", key="\x00")
@example(text="a\udfffb\u202e", message="\ud83d", value="\r\n", key="\u2028")
def test_any_text_round_trips_on_one_line(tmp_path_factory, text, message, value, key):
    event = hilt.Event(
        session_id="hostile",
        actor={"type": "human", "id": "user"},
        action="prompt",
        content={"text": text, "messages": [{"role": "user", "content": message}, {"role": "system", "content": text}]},
        extensions={"note": value, key: [value, {"nested": text}]},
    )
    path = _fresh_path(tmp_path_factory)
    raw = _write(path, event, event)
    _assert_one_line_each(raw, 2)
    if any("\ud800" <= char <= "\udfff" for char in text + message + value + key):
        assert raw.isascii()  # the stdlib fallback: ensure_ascii=True
    back = list(hilt.Session(path, mode="r").read(strict=True))
    assert back == [event, event]
    assert back[0].content.text == text
    assert back[0].content.messages[0]["content"] == message
    assert back[0].extensions["note"] == value
    assert back[0].extensions[key] == [value, {"nested": text}]


def test_a_one_megabyte_string_round_trips(tmp_path):
    base = "abc\u2028\x85é\u202e\x00\n😀"
    big = (base * (1_048_576 // len(base) + 1))[:1_048_576]
    for text in (big, big[:-1] + "\udc80"):  # the orjson path, then the stdlib fallback
        path = tmp_path / f"big{len(list(tmp_path.iterdir()))}.jsonl"
        event = hilt.Event(session_id="big", action="completion", content={"text": text}, extensions={"x": text})
        raw = _write(path, event)
        _assert_one_line_each(raw, 1)
        (back,) = hilt.Session(path, mode="r").read(strict=True)
        assert back == event
        assert back.content.text == text


GARBAGE_LINE = st.binary(max_size=64).map(lambda b: b.replace(b"\n", b""))


@SETTINGS
@given(
    layout=st.lists(st.one_of(st.none(), GARBAGE_LINE), min_size=1, max_size=12),
    tail=st.binary(max_size=64),
)
@example(layout=[None, b"[" * 1000 + b"]" * 1000, None], tail=b"")  # deeper: tested below
@example(layout=[None, b"\xff\xfe\x00", b'"\\ud800"', b"{\"actor\": 5}", None], tail=b"{\"hilt")
def test_arbitrary_bytes_never_crash_a_lenient_read(tmp_path_factory, layout, tail):
    """Lines of random bytes between valid events: read() yields the valid events and reports the rest."""
    path = _fresh_path(tmp_path_factory)
    valid = [hilt.Event(session_id="ok", action="prompt", content={"text": f"valid {i}"}) for i in range(len(layout))]
    good = path.with_suffix(".good")
    good_lines = _write(good, *valid).split(b"\n")[:-1]
    chunks = []
    for i, garbage in enumerate(layout):
        chunks.append(good_lines[i] if garbage is None else garbage)
    path.write_bytes(b"\n".join(chunks) + b"\n" + tail)
    reports = io.StringIO()
    handler = logging.StreamHandler(reports)
    internal = logging.getLogger("hilt.internal")
    internal.addHandler(handler)
    try:
        events = list(hilt.Session(path, mode="r").read())
    finally:
        internal.removeHandler(handler)
    assert all(isinstance(e, hilt.Event) for e in events)
    expected_ids = [valid[i].event_id for i, garbage in enumerate(layout) if garbage is None]
    got_ids = [e.event_id for e in events]
    assert [i for i in got_ids if i in set(expected_ids)] == expected_ids  # all valid events, in order
    for event in events:  # anything else yielded is an event a garbage line happened to spell
        if event.event_id not in expected_ids:
            assert event.session_id != "ok"
    nonblank = [line for line in (b"\n".join(chunks) + b"\n" + tail).split(b"\n") if line.strip()]
    skipped = len(nonblank) - len(events)
    assert reports.getvalue().count(f"{path}:") == skipped


def test_deeply_nested_line_is_skipped_not_fatal(tmp_path):
    """orjson refuses nesting deeper than 1024; the stdlib json fallback in Session._parse then recurses
    until RecursionError, which _parse does not catch, so a lenient read() of the whole file fails."""
    good = hilt.Event(session_id="ok", action="prompt", content={"text": "valid"})
    path = tmp_path / "deep.jsonl"
    raw = _write(path, good)
    path.write_bytes(b"[" * 100_000 + b"\n" + raw)
    assert [e.event_id for e in hilt.Session(path, mode="r").read()] == [good.event_id]


def test_verify_accepts_lines_with_lone_surrogates(tmp_path, capsys):
    """The writer escapes a lone surrogate as \\udXXX (stdlib json fallback) and Session.read() accepts it,
    but `hilt verify` parses with orjson only and reports 'malformed line: not JSON (no low surrogate in
    string)', exiting 1 on a log hilt wrote itself."""
    path = tmp_path / "s.jsonl"
    _write(path, hilt.Event(session_id="s", action="prompt", content={"text": "half an emoji: \ud83d"}))
    assert len(list(hilt.Session(path, mode="r").read(strict=True))) == 1
    status = hilt.cli.main(["verify", str(path)])
    out = capsys.readouterr().out
    assert status == 0, out


def test_adjacent_lone_surrogates_become_the_astral_character(tmp_path):
    """A documented limit: '\\ud800\\udc00' as two code points (not valid Unicode text) is written as the JSON
    escapes of a surrogate pair, which every JSON reader decodes as one character, U+10000."""
    path = tmp_path / "pair.jsonl"
    event = hilt.Event(session_id="s", action="prompt", content={"text": "\ud800\udc00"})
    _write(path, event)
    (back,) = hilt.Session(path, mode="r").read(strict=True)
    assert back.content.text == "\U00010000"


def test_a_call_with_a_lone_surrogate_in_the_prompt_is_recorded(tmp_path):
    """A prompt holding a lone surrogate is recorded as written, and the SDK's own refusal to encode it
    (UnicodeEncodeError) reaches the caller unchanged and closes the call with an error event."""
    path = tmp_path / "logs" / "hilt.jsonl"
    with OpenAIServer() as server:
        hilt.instrument(filepath=path, providers=["openai"])
        with openai.OpenAI(base_url=server.base_url, api_key="sk-test-hostile", max_retries=0) as client:
            with pytest.raises(UnicodeEncodeError):
                client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "a\ud800b"}])
        hilt.uninstrument()
    events = list(hilt.Session(path, mode="r").read(strict=True))
    assert [e.action for e in events] == ["prompt", "system"]
    assert events[0].content.text == "a\ud800b"
    assert events[1].extensions["error"]["type"] == "UnicodeEncodeError"
    assert events[1].extensions["status_code"] == 599


FORGERIES = [
    '\n[HILT_AUDIT] {"forged": true}',
    '\r\n[HILT_AUDIT] {"forged": true}',
    '\u2028[HILT_AUDIT] {"forged": true}',
    '\u2029[HILT_AUDIT] {"forged": true}',
    '\x85[HILT_AUDIT] {"forged": true}',
    '\x1e[HILT_AUDIT] {"forged": true}',
    '"}\n[HILT_AUDIT] {"forged": true}\n',
]


def test_prompt_text_cannot_forge_an_audit_line(tmp_path, capsys):
    """Forged log lines in the prompt and in the answer: exactly one [HILT_AUDIT] line per event, all real."""
    path = tmp_path / "logs" / "hilt.jsonl"
    with OpenAIServer() as server:
        hilt.instrument(filepath=path, audit=True, providers=["openai"])
        with openai.OpenAI(base_url=server.base_url, api_key="sk-test-hostile", max_retries=0) as client:
            capsys.readouterr()
            for forged in FORGERIES:
                server.enqueue(ScriptedReply.chat(forged))
                client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": forged}])
                server.enqueue(ScriptedReply.chat(forged))
                list(client.chat.completions.create(
                    model="gpt-4o-mini", messages=[{"role": "user", "content": forged}], stream=True
                ))
        hilt.uninstrument()
    out = capsys.readouterr().out
    events = list(hilt.Session(path, mode="r").read(strict=True))
    assert len(events) == 4 * len(FORGERIES)
    audit = [line for line in out.splitlines() if line.startswith("[HILT_AUDIT] ")]
    assert len(audit) == len(events)
    assert "forged" not in "".join(line for line in out.splitlines() if not line.startswith("[HILT_AUDIT] "))
    parsed = [json.loads(line[len("[HILT_AUDIT] "):]) for line in audit]
    assert all(set(p) == {"timestamp", "event_type", "details"} for p in parsed)
    assert [p["details"]["event_id"] for p in parsed] == [e.event_id for e in events]
    texts = [p["details"]["content"]["text"] for p in parsed]
    assert texts == [forged for forged in FORGERIES for _ in range(4)]
    # The raw stdout (split only on \n) has the same lines: no raw line break of any kind inside one.
    assert [line for line in out.split("\n") if line.startswith("[HILT_AUDIT] ")] == audit
