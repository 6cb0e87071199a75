"""The event model: every field survives Event -> JSONL -> Session.read(), ids, timestamps and actions."""

from __future__ import annotations

import json
import re
import uuid
from datetime import datetime, timedelta, timezone

import pytest

import hilt
from hilt import Actor, Content, Event, HILTError, Metrics, Session
from hilt.events import ACTIONS, HILT_VERSION

TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$")


def full_event() -> Event:
    """An event with every documented field set, plus keys hilt does not know at every level."""
    return Event(
        session_id="conv_0123456789abcdef",
        actor={"type": "agent", "id": "gpt-4o-mini-2024-07-18", "display": "Assistant"},
        action="completion",
        content={
            "text": "Bonjour — ça va? \u2028 line-sep, emoji \U0001f600, quote \" and \\ backslash\nnew line",
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": [{"type": "text", "text": "hi"}, {"type": "image_url", "image_url": {"url": "<image/png base64, 48000 bytes>"}}]},
            ],
            "tools": [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}],
            "tool_calls": [{"id": "call_1", "name": "lookup", "arguments": "{\"q\": \"x\"}"}],
            "refusal": "I can't help with that part.",
            "audio": {"id": "audio_1"},
        },
        metrics={
            "tokens": {"prompt": 12, "completion": 7, "total": 19, "cached": 0, "reasoning": None},
            "cost_usd": 0.000123456789,
            "latency_ms": 812.5,
            "ttft_ms": 95.25,
            "queue_ms": 3,
        },
        extensions={
            "call_id": "c-1",
            "reply_to": "01900000-0000-7000-8000-000000000000",
            "provider": "openai",
            "operation": "chat",
            "model": "gpt-4o-mini",
            "response_model": "gpt-4o-mini-2024-07-18",
            "status_code": 200,
            "stream": False,
            "finish_reason": "stop",
            "request_id": "req_abc",
            "request": {"temperature": 0.2, "max_tokens": 256, "seed": 7, "top_p": 1},
            "big_int": 2**53 + 1,
            "negative": -3,
            "nested": {"list": [1, 2.5, None, True, "s"]},
        },
        unknown_fields={"x_custom": {"kept": [1, "two"]}, "trace_id": "abc123"},
    )


def test_round_trip_through_file_keeps_every_field(tmp_log, read_jsonl):
    """An event appended to a file and read back with Session.read() equals the original, ids included."""
    events = [full_event(), Event(session_id="conv-2", action="prompt", content={"text": "hi"}), Event()]
    with Session(tmp_log) as session:
        for event in events:
            session.append(event)
    read_back = list(Session(tmp_log, mode="r").read())
    assert read_back == events
    assert [e.event_id for e in read_back] == [e.event_id for e in events]
    assert [e.timestamp for e in read_back] == [e.timestamp for e in events]
    lines = read_jsonl(tmp_log)
    assert lines == [e.to_dict() for e in events]


def test_written_line_fields_one_by_one(tmp_log, read_jsonl):
    """The JSON line holds exactly the documented keys with the values given, unknown top-level keys kept."""
    event = full_event()
    with Session(tmp_log) as session:
        session.append(event)
    (line,) = read_jsonl(tmp_log)
    assert list(line)[:7] == ["hilt_version", "event_id", "timestamp", "session_id", "actor", "action", "content"]
    assert line["hilt_version"] == HILT_VERSION
    assert line["event_id"] == event.event_id
    assert line["timestamp"] == event.timestamp
    assert line["session_id"] == "conv_0123456789abcdef"
    assert line["actor"] == {"type": "agent", "id": "gpt-4o-mini-2024-07-18", "display": "Assistant"}
    assert line["action"] == "completion"
    assert line["content"]["text"] == event.content.text
    assert line["content"]["messages"][1]["content"][1]["image_url"]["url"] == "<image/png base64, 48000 bytes>"
    assert line["content"]["tools"][0]["function"]["name"] == "lookup"
    assert line["content"]["tool_calls"] == [{"id": "call_1", "name": "lookup", "arguments": "{\"q\": \"x\"}"}]
    assert line["content"]["refusal"] == "I can't help with that part."
    assert line["content"]["audio"] == {"id": "audio_1"}
    assert line["metrics"]["tokens"] == {"prompt": 12, "completion": 7, "total": 19, "cached": 0, "reasoning": None}
    assert line["metrics"]["cost_usd"] == 0.000123456789
    assert line["metrics"]["latency_ms"] == 812.5
    assert line["metrics"]["ttft_ms"] == 95.25
    assert line["metrics"]["queue_ms"] == 3
    assert line["extensions"]["status_code"] == 200
    assert line["extensions"]["stream"] is False
    assert line["extensions"]["big_int"] == 2**53 + 1
    assert line["extensions"]["nested"] == {"list": [1, 2.5, None, True, "s"]}
    assert line["x_custom"] == {"kept": [1, "two"]}
    assert line["trace_id"] == "abc123"


def test_numbers_stay_numbers(tmp_log):
    """Costs, tokens, latencies and status codes are JSON numbers in the file, never strings."""
    with Session(tmp_log) as session:
        session.append(full_event())
        session.append(Event(action="completion", metrics={"tokens": {"total": 3}, "cost_usd": 0, "latency_ms": 1}))
    first, second = (json.loads(raw) for raw in tmp_log.read_bytes().split(b"\n")[:-1])
    assert type(first["metrics"]["cost_usd"]) is float
    assert type(first["metrics"]["latency_ms"]) is float
    assert all(type(first["metrics"]["tokens"][k]) is int for k in ("prompt", "completion", "total", "cached"))
    assert type(first["extensions"]["status_code"]) is int
    assert type(first["extensions"]["request"]["temperature"]) is float
    assert type(second["metrics"]["cost_usd"]) is int and second["metrics"]["cost_usd"] == 0
    assert type(second["metrics"]["latency_ms"]) is int
    assert b'"cost_usd":"' not in tmp_log.read_bytes()


def test_to_dict_from_dict_lossless_with_unknown_keys():
    """A parsed line with unknown keys at every level comes back from from_dict().to_dict() unchanged."""
    line = {
        "hilt_version": "1.0",
        "event_id": "01900000-0000-7000-8000-00000000abcd",
        "timestamp": "2024-06-01T12:00:00.000001Z",
        "session_id": "s",
        "actor": {"type": "tool", "id": "vector-db", "region": "eu"},
        "action": "retrieval",
        "content": {"text": None, "documents": [{"id": 1}], "tool_calls": []},
        "metrics": {"tokens": {"prompt": 1, "custom_tokens": 4}, "cost_usd": None, "latency_ms": 2.0, "gpu_ms": 7},
        "extensions": {"k": {"deep": [1, {"x": None}]}},
        "future_top_level": [1, 2],
    }
    event = Event.from_dict(line)
    assert event.to_dict() == line
    assert event.unknown_fields == {"future_top_level": [1, 2]}
    assert event.actor.extra == {"region": "eu"}
    assert event.content.extra == {"documents": [{"id": 1}]}
    assert event.metrics.extra == {"gpu_ms": 7}
    assert Event.from_dict(event.to_dict()) == event


def test_from_dict_of_to_dict_equals_event():
    """Event.from_dict(event.to_dict()) == event for a fully populated event."""
    event = full_event()
    assert Event.from_dict(event.to_dict()) == event


def test_hilt_version_always_written(tmp_log, read_jsonl):
    """hilt_version is in every line, also for events built from dicts that lacked it and for minimal events."""
    with Session(tmp_log) as session:
        session.append(Event())
        session.append(Event.from_dict({"action": "feedback", "content": {"text": "good"}}))
    lines = read_jsonl(tmp_log)
    assert [line["hilt_version"] for line in lines] == [HILT_VERSION, HILT_VERSION]
    assert Event().to_dict()["hilt_version"] == HILT_VERSION


def test_empty_metrics_left_out_and_missing_values_null(tmp_log, read_jsonl):
    """An event with nothing measured has no metrics key; unset session_id and actor id are null, not made up."""
    with Session(tmp_log) as session:
        session.append(Event(action="prompt", content={"text": "hi"}))
    (line,) = read_jsonl(tmp_log)
    assert "metrics" not in line
    assert line["session_id"] is None
    assert line["actor"] == {"type": "system", "id": None}
    assert line["content"] == {"text": "hi"}
    assert line["extensions"] == {}


def test_timestamps_are_utc_with_z():
    """Timestamps are ISO 8601 UTC with microseconds and a Z suffix, and parse back as UTC."""
    before = datetime.now(timezone.utc)
    event = Event()
    after = datetime.now(timezone.utc)
    assert TIMESTAMP.match(event.timestamp), event.timestamp
    parsed = datetime.fromisoformat(event.timestamp.replace("Z", "+00:00"))
    assert parsed.utcoffset() == timedelta(0)
    assert before - timedelta(microseconds=1) <= parsed <= after + timedelta(microseconds=1)
    assert hilt.audit_log("x").timestamp.endswith("Z")


def test_event_ids_unique_time_ordered_uuid7():
    """Event ids are UUIDv7, unique, and sort in creation order even within one millisecond."""
    events = [Event() for _ in range(5000)]
    ids = [e.event_id for e in events]
    assert len(set(ids)) == len(ids)
    assert ids == sorted(ids)
    assert all(uuid.UUID(i).version == 7 for i in ids[:50])


def test_documented_and_custom_actions_accepted():
    """Every documented action and a custom lower-case name like data_export build an event."""
    for action in sorted(ACTIONS) + ["data_export", "consent_given", "step2"]:
        assert Event(action=action).action == action
    assert {"prompt", "completion", "system", "tool_call", "tool_result", "retrieval", "feedback"} <= ACTIONS


@pytest.mark.parametrize("action", ["Bad Action", "", "Prompt", "data-export", "2fa", "x" * 65, None, 3])
def test_invalid_action_raises_naming_action(action):
    """An action that is not a lower-case name raises HILTError (a ValueError) whose message names `action`."""
    with pytest.raises(HILTError, match=r"^action:") as info:
        Event(action=action)
    assert isinstance(info.value, ValueError)


def test_from_dict_rejects_invalid_action_and_non_objects():
    """from_dict refuses an invalid action and a non-dict with HILTError."""
    with pytest.raises(HILTError, match="action"):
        Event.from_dict({"action": "Bad Action"})
    with pytest.raises(HILTError):
        Event.from_dict([1, 2])  # type: ignore[arg-type]


def test_actor_must_be_a_mapping():
    """An actor that is neither an Actor nor a dict raises HILTError naming `actor`."""
    with pytest.raises(HILTError, match=r"^actor:"):
        Event(actor="human")  # type: ignore[arg-type]


def test_dict_and_object_forms_are_equal():
    """Event(actor={...}, content={...}, metrics={...}) equals the event built from Actor/Content/Metrics objects."""
    ids = {"event_id": "01900000-0000-7000-8000-000000000001", "timestamp": "2024-01-01T00:00:00.000000Z"}
    from_dicts = Event(
        actor={"type": "tool", "id": "db"}, action="retrieval", content={"text": "3 documents"},
        metrics={"latency_ms": 4.0}, **ids,
    )
    from_objects = Event(
        actor=Actor(type="tool", id="db"), action="retrieval", content=Content(text="3 documents"),
        metrics=Metrics(latency_ms=4.0), **ids,
    )
    assert from_dicts == from_objects
    assert Event(content="plain text").content.text == "plain text"


def test_lone_surrogate_and_line_separators_round_trip(tmp_log):
    """Text with a lone surrogate and U+2028/U+2029/U+0085 is written on one line and read back unchanged."""
    text = "a\ud800b \u2028 c \u2029 d \x85 e"
    with Session(tmp_log) as session:
        session.append(Event(action="prompt", content={"text": text}))
        session.append(Event(action="prompt", content={"text": "after"}))
    raw = tmp_log.read_bytes()
    assert raw.count(b"\n") == 2
    assert len(raw.decode("utf-8").splitlines()) == 2  # splitlines() also breaks on U+2028, U+2029, U+0085
    assert [e.content.text for e in Session(tmp_log, mode="r").read()] == [text, "after"]
