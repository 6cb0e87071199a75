"""Reading events back from a sheet: ``Session(backend="sheets")`` / ``read_sheet_events``, real gspread, local server."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("gspread")
pytest.importorskip("google.auth")
pytest.importorskip("cryptography")

from hilt import Event, HILTError, Session  # noqa: E402
from hilt.columns import COLUMNS  # noqa: E402
from hilt.handlers._sheets_rows import event_cells  # noqa: E402
from hilt.handlers.sheets import HiltSheetsHandler  # noqa: E402
from hilt.sheets_reader import open_worksheet, read_sheet_events  # noqa: E402
from hilt.testing.sheets_server import SheetsServer  # noqa: E402

# The server / account / client / handler fixtures of the writer's tests, shared rather than copied.
from test_sheets import (  # noqa: E402,F401
    EMAIL,
    SHEET,
    account,
    completion,
    fresh,
    make_client,
    make_handler,
    send,
    server,
)


def written(handler: HiltSheetsHandler, events: list[Event]) -> None:
    for event in events:
        send(handler, event)
    handler.flush()


def read(make_client: Callable[..., Any], **options: Any) -> list[Event]:
    options.setdefault("sheet_id", SHEET)
    return list(Session(backend="sheets", client=make_client(), **options).read())


def test_round_trip_every_column(fresh: SheetsServer, make_handler: Callable[..., Any],
                                 make_client: Callable[..., Any]) -> None:
    handler = make_handler(columns=list(COLUMNS))
    error = Event(session_id="conv_abc", actor={"type": "system", "id": "openai"}, action="system",
                  extensions={"call_id": "call-9", "reply_to": "p-9", "provider": "openai", "status_code": 429,
                              "error": {"type": "RateLimitError", "code": None, "message": "slow down"},
                              "user_id": "u-1", "tenant": "acme"})
    events = [completion(0), completion(1, relevance_score=0.75), error]
    events[1].metrics.ttft_ms = 12.5  # type: ignore[union-attr]
    written(handler, events)

    back = read(make_client)
    assert [event.event_id for event in back] == [event.event_id for event in events]
    for original, event in zip(events, back):
        expected = {name: value for name, value in event_cells(original).items() if value is not None}
        got = {name: value for name, value in event_cells(event).items() if value is not None}
        assert got == expected
        for name, value in expected.items():
            assert type(got[name]) is type(value), name
    first = back[0]
    assert first.session_id == "conv_abc" and first.action == "completion"
    assert first.timestamp == events[0].timestamp
    assert first.actor.id == "gpt-4o-mini-2024-07-18"  # type: ignore[union-attr]
    assert first.actor.type == "agent"  # type: ignore[union-attr]
    assert first.content.text == "answer 0"  # type: ignore[union-attr]
    assert first.metrics.tokens == {"prompt": 10, "completion": 5, "total": 15, "cached": 0}  # type: ignore[union-attr]
    assert isinstance(first.metrics.tokens["prompt"], int)  # type: ignore[union-attr]
    assert first.metrics.cost_usd == 0.00012 and isinstance(first.metrics.cost_usd, float)  # type: ignore[union-attr]
    assert first.metrics.latency_ms == 321.5  # type: ignore[union-attr]
    assert first.extensions["status_code"] == 200 and isinstance(first.extensions["status_code"], int)
    assert first.extensions["model"] == "gpt-4o-mini-2024-07-18"
    assert "reasoning" not in first.metrics.tokens  # an empty cell is missing, not 0  # type: ignore[union-attr]
    assert back[1].extensions["relevance_score"] == 0.75
    assert back[1].metrics.ttft_ms == 12.5  # type: ignore[union-attr]
    assert back[2].extensions["error"] == {"type": "RateLimitError"}
    assert back[2].metrics.is_empty()  # type: ignore[union-attr]
    assert back[2].content.text is None  # type: ignore[union-attr]


def test_default_columns_round_trip(fresh: SheetsServer, make_handler: Callable[..., Any],
                                    make_client: Callable[..., Any]) -> None:
    events = [completion(n) for n in range(3)]
    written(make_handler(), events)
    back = read(make_client)
    assert [e.event_id for e in back] == [e.event_id for e in events]
    assert [e.metrics.tokens.get("prompt") for e in back] == [10, 11, 12]  # type: ignore[union-attr]
    assert all(e.extensions["reply_to"] == f"prompt-{n}" for n, e in enumerate(back))


def test_column_subset_and_unknown_columns(fresh: SheetsServer, server: SheetsServer,
                                           make_client: Callable[..., Any]) -> None:
    server.add_spreadsheet(SHEET, shared_with=[EMAIL], worksheets={"Logs": [
        ["notes", "event_id", "cost_usd", "action", "tokens_in"],
        ["hand-written", "ev-1", 0.5, "completion", 7],
        ["", "ev-2", "", "prompt", ""],
        [],
        ["only notes"],
        ["", "ev-3"],
    ]})
    back = read(make_client)
    assert [e.event_id for e in back] == ["ev-1", "ev-2", "ev-3"]
    one, two, three = back
    assert one.metrics.cost_usd == 0.5 and one.metrics.tokens == {"prompt": 7}  # type: ignore[union-attr]
    assert one.session_id is None and one.content.text is None  # type: ignore[union-attr]
    assert "notes" not in one.to_dict() and not one.unknown_fields
    assert two.action == "prompt" and two.metrics.is_empty()  # type: ignore[union-attr]
    assert three.timestamp is None  # missing, never invented
    assert three.to_dict()["extensions"] == {}


def test_formula_looking_text_round_trips(fresh: SheetsServer, make_handler: Callable[..., Any],
                                          make_client: Callable[..., Any]) -> None:
    texts = ['=HYPERLINK("http://x")', "+1", "-2", "@me", "plain", "it's", "'quoted'"]
    events = []
    for n, text in enumerate(texts):
        event = completion(n)
        event.content.text = text  # type: ignore[union-attr]
        events.append(event)
    written(make_handler(columns=["event_id", "message"]), events)
    assert [row[1] for row in fresh.values(SHEET, "Logs")[1:5]] == ["'" + t for t in texts[:4]]  # escaped on the sheet
    assert [e.content.text for e in read(make_client)] == texts  # type: ignore[union-attr]


def test_text_numbers_stay_text(fresh: SheetsServer, make_handler: Callable[..., Any],
                                make_client: Callable[..., Any]) -> None:
    event = completion(0)
    event.content.text = "42"  # type: ignore[union-attr]
    written(make_handler(columns=["event_id", "message", "tokens_in"]), [event])
    (back,) = read(make_client)
    assert back.content.text == "42" and back.metrics.tokens == {"prompt": 10}  # type: ignore[union-attr]


def test_empty_sheet_yields_nothing(fresh: SheetsServer, server: SheetsServer,
                                    make_client: Callable[..., Any]) -> None:
    server.add_spreadsheet(SHEET, shared_with=[EMAIL], worksheets={"Logs": []})
    assert read(make_client) == []  # no header at all
    server.add_spreadsheet(SHEET, shared_with=[EMAIL], worksheets={"Logs": [["event_id", "action"]]})
    assert read(make_client) == []  # a header and no rows


def test_read_sheet_events_directly(fresh: SheetsServer, make_handler: Callable[..., Any],
                                    make_client: Callable[..., Any]) -> None:
    events = [completion(5)]
    written(make_handler(worksheet_name="Audit"), events)
    worksheet = open_worksheet(sheet_id=SHEET, worksheet_name="Audit", client=make_client())
    assert [e.event_id for e in read_sheet_events(worksheet)] == [events[0].event_id]
    reads = [query for method, query in fresh.requests if method == "GET" and "/values/" in query]
    assert reads  # read through the values API


def test_bad_action_row_is_skipped_or_raises(fresh: SheetsServer, server: SheetsServer,
                                             make_client: Callable[..., Any],
                                             caplog: pytest.LogCaptureFixture) -> None:
    server.add_spreadsheet(SHEET, shared_with=[EMAIL], worksheets={"Logs": [
        ["event_id", "action"], ["ev-1", "Not An Action"], ["ev-2", "prompt"]]})
    session = Session(backend="sheets", sheet_id=SHEET, client=make_client())
    with caplog.at_level(logging.WARNING, logger="hilt.internal"):
        assert [e.event_id for e in session.read()] == ["ev-2"]
    assert "Logs!row 2" in caplog.text
    with pytest.raises(HILTError, match=r"Logs!row 2: action"):
        list(session.read(strict=True))


def test_sheets_session_is_read_only(fresh: SheetsServer, make_client: Callable[..., Any]) -> None:
    fresh.add_spreadsheet(SHEET, shared_with=[EMAIL], worksheets={"Logs": []})
    session = Session(backend="sheets", sheet_id=SHEET, client=make_client())
    with pytest.raises(HILTError, match=r"instrument\(sheet_id=\.\.\.\).*HiltSheetsHandler"):
        session.append(Event(action="feedback"))
    assert "sheets" in repr(session)
    session.close()


def test_wrong_backend_and_misplaced_options(tmp_path: Path) -> None:
    with pytest.raises(HILTError, match="^backend: 'excel'"):
        Session(backend="excel")
    with pytest.raises(HILTError, match="^backend:"):
        Session(tmp_path / "x.jsonl", sheet_id=SHEET)
    with pytest.raises(HILTError, match="^path:"):
        Session(tmp_path / "x.jsonl", backend="sheets", sheet_id=SHEET)


def test_local_backend_unchanged(tmp_path: Path) -> None:
    with Session(tmp_path / "x.jsonl", backend="local") as session:
        session.append(Event(action="feedback", content={"text": "hi"}))
    assert [e.content.text for e in Session(tmp_path / "x.jsonl", mode="r")] == ["hi"]  # type: ignore[union-attr]


def test_open_errors(fresh: SheetsServer, make_client: Callable[..., Any], monkeypatch: pytest.MonkeyPatch,
                     tmp_path: Path, account: dict[str, Any]) -> None:
    monkeypatch.delenv("GOOGLE_SHEET_ID", raising=False)
    with pytest.raises(HILTError, match="^sheet_id: no spreadsheet id.*GOOGLE_SHEET_ID"):
        Session(backend="sheets", client=make_client())
    with pytest.raises(HILTError, match="was not found \\(404\\)"):
        Session(backend="sheets", sheet_id="nope", client=make_client())
    fresh.add_spreadsheet("private", shared_with=[])
    with pytest.raises(HILTError, match=f"not shared with {EMAIL} \\(403\\)"):
        Session(backend="sheets", sheet_id="private", client=make_client())
    with pytest.raises(HILTError, match="^worksheet_name: .*'Missing'"):
        Session(backend="sheets", sheet_id=SHEET, worksheet_name="Missing", client=make_client())
    monkeypatch.delenv("GOOGLE_CREDENTIALS_PATH", raising=False)
    with pytest.raises(HILTError, match="^credentials_path: no Google credentials"):
        Session(backend="sheets", sheet_id=SHEET)
    key = tmp_path / "key.json"
    key.write_text(json.dumps({"type": "authorized_user"}))
    with pytest.raises(HILTError, match="^credentials_path: not a service-account key"):
        Session(backend="sheets", sheet_id=SHEET, credentials_path=key)


def test_env_sheet_id(fresh: SheetsServer, make_handler: Callable[..., Any], make_client: Callable[..., Any],
                      monkeypatch: pytest.MonkeyPatch) -> None:
    events = [completion(3)]
    written(make_handler(), events)
    monkeypatch.setenv("GOOGLE_SHEET_ID", SHEET)
    assert [e.event_id for e in Session(backend="sheets", client=make_client()).read()] == [events[0].event_id]


@pytest.fixture(autouse=True)
def _no_leftover_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("GOOGLE_SHEET_ID", raising=False)
    yield
