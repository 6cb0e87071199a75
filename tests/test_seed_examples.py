"""The seeds' own examples run as written against hilt: appending, cost and token sums, error loops, content."""

from __future__ import annotations

import pytest

import hilt
from hilt import Event, Session
from hilt.instrumentation import get_context


def write_calls(session: Session) -> None:
    """Two successful calls, a rate-limited one and a connection failure, as providers record them."""
    for n, (cost, total) in enumerate([(0.0015, 120), (0.0025, 80)]):
        prompt = session.append(Event(session_id="conv-1", actor={"type": "human", "id": "user"}, action="prompt",
                                      content={"text": f"question {n}"}, extensions={"call_id": f"c{n}"}))
        session.append(Event(session_id="conv-1", actor={"type": "agent", "id": "gpt-4o-mini"}, action="completion",
                             content={"text": f"answer {n}"},
                             metrics={"tokens": {"prompt": total - 20, "completion": 20, "total": total}, "cost_usd": cost,
                                      "latency_ms": 250.0},
                             extensions={"call_id": f"c{n}", "reply_to": prompt.event_id, "status_code": 200}))
    for call_id, status, kind in [("c2", 429, "RateLimitError"), ("c3", 599, "APIConnectionError")]:
        session.append(Event(session_id="conv-1", actor={"type": "human", "id": "user"}, action="prompt",
                             content={"text": "again"}, extensions={"call_id": call_id}))
        session.append(Event(session_id="conv-1", actor={"type": "system", "id": "openai"}, action="system",
                             extensions={"call_id": call_id, "status_code": status,
                                         "error": {"type": kind, "code": None, "message": "failed"}}))


def test_append_retrieval_event_as_written(tmp_log, read_jsonl):
    """session.append(Event(session_id=..., actor={...}, action='retrieval', content={...})) writes that event."""
    session = Session(tmp_log)
    session.append(Event(session_id="conv-1", actor={"type": "tool", "id": "vector-db"}, action="retrieval", content={"text": "3 documents"}))
    (line,) = read_jsonl(tmp_log)
    assert line["session_id"] == "conv-1"
    assert line["actor"] == {"type": "tool", "id": "vector-db"}
    assert line["action"] == "retrieval"
    assert line["content"] == {"text": "3 documents"}
    (event,) = session.read()
    assert event.content.text == "3 documents"
    assert event.actor.type == "tool" and event.actor.id == "vector-db"


def test_append_through_active_session(tmp_log, read_jsonl):
    """get_context().session.append(...) after instrument() writes to the instrumented file."""
    hilt.instrument(filepath=tmp_log, providers=[])
    get_context().session.append(Event(session_id="conv-1", actor={"type": "tool", "id": "vector-db"}, action="retrieval", content={"text": "3 documents"}))
    assert [line["action"] for line in read_jsonl(tmp_log)] == ["retrieval"]


def test_cost_loop_as_written(tmp_log):
    """total = sum(e.metrics.cost_usd or 0 for e in session.read()) sums the completions' costs."""
    session = Session(tmp_log)
    write_calls(session)
    total = sum(e.metrics.cost_usd or 0 for e in session.read())
    assert total == pytest.approx(0.004)


def test_token_loop_as_written(tmp_log):
    """sum(e.metrics.tokens.get('total', 0) for e in session.read()) counts tokens, prompts and errors adding 0."""
    session = Session(tmp_log)
    write_calls(session)
    assert sum(e.metrics.tokens.get("total", 0) for e in session.read()) == 200


def test_error_loop_as_written(tmp_log):
    """[e for e in session.read() if (e.extensions.get('status_code') or 0) >= 400] finds each failed call once."""
    session = Session(tmp_log)
    write_calls(session)
    errors = [e for e in session.read() if (e.extensions.get("status_code") or 0) >= 400]
    assert [e.extensions["status_code"] for e in errors] == [429, 599]
    assert [e.extensions["error"]["type"] for e in errors] == ["RateLimitError", "APIConnectionError"]
    assert all(e.action == "system" for e in errors)


def test_content_text_and_reply_links(tmp_log):
    """event.content.text reads the text; a completion's extensions.reply_to is its prompt's event_id."""
    session = Session(tmp_log)
    write_calls(session)
    events = list(session.read())
    assert [e.content.text for e in events if e.action == "completion"] == ["answer 0", "answer 1"]
    by_id = {e.event_id: e for e in events}
    for completion in (e for e in events if e.action == "completion"):
        prompt = by_id[completion.extensions["reply_to"]]
        assert prompt.action == "prompt" and prompt.extensions["call_id"] == completion.extensions["call_id"]


def test_with_session_block(tmp_log):
    """`with Session(path) as session:` appends and closes; a new Session reads the same events."""
    with Session(tmp_log) as session:
        write_calls(session)
    assert len(list(Session(tmp_log, mode="r"))) == 8
