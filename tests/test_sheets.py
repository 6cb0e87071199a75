"""HiltSheetsHandler against the real gspread + google-auth, speaking HTTP to hilt's local Sheets server."""

from __future__ import annotations

import json
import logging
import os
import stat
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

gspread = pytest.importorskip("gspread")
pytest.importorskip("google.auth")
pytest.importorskip("cryptography")

import requests  # noqa: E402
from google.auth.transport.requests import AuthorizedSession, Request  # noqa: E402
from google.oauth2.service_account import Credentials  # noqa: E402

import hilt  # noqa: E402
from hilt import HILTError  # noqa: E402
from hilt.columns import DEFAULT_COLUMNS  # noqa: E402
from hilt.events import Event  # noqa: E402
from hilt.handlers.sheets import SCOPES, HiltSheetsHandler  # noqa: E402
from hilt.testing.sheets_server import SheetsServer, make_service_account  # noqa: E402

SHEET = "sheet-123"
EMAIL = "hilt-writer@hilt-test.iam.gserviceaccount.com"


@pytest.fixture(scope="module")
def server() -> Iterator[SheetsServer]:
    with SheetsServer() as srv:
        yield srv


@pytest.fixture(scope="module")
def account(server: SheetsServer) -> dict[str, Any]:
    info, public_key = make_service_account(server.token_uri, EMAIL)
    server.add_service_account(EMAIL, public_key)
    return info


@pytest.fixture
def fresh(server: SheetsServer, account: dict[str, Any]) -> Iterator[SheetsServer]:
    """The server with one empty spreadsheet shared with the test account, and no pending faults."""
    server.unavailable = False
    server.release()
    server._faults.clear()
    server.add_spreadsheet(SHEET, shared_with=[EMAIL])
    yield server
    server.release()
    server.unavailable = False
    server._faults.clear()


@pytest.fixture
def make_client(server: SheetsServer, account: dict[str, Any]) -> Callable[..., Any]:
    def build(info: dict[str, Any] | None = None) -> Any:
        creds = Credentials.from_service_account_info(info or account, scopes=SCOPES)
        # google-auth's token refresh and its background look-ups use their own requests session:
        # route that one to the local server too, so no test ever reaches Google.
        auth_session = requests.Session()
        auth_session.mount("https://", server.adapter())
        session = AuthorizedSession(creds, auth_request=Request(session=auth_session))
        session.mount("https://", server.adapter())
        return gspread.Client(auth=creds, session=session)

    return build


@pytest.fixture
def make_handler(make_client: Callable[..., Any], tmp_path: Path) -> Iterator[Callable[..., HiltSheetsHandler]]:
    made: list[HiltSheetsHandler] = []

    def build(**options: Any) -> HiltSheetsHandler:
        options.setdefault("sheet_id", SHEET)
        options.setdefault("client", make_client())
        options.setdefault("spill_path", tmp_path / "spill" / "sheets-spill.jsonl")
        options.setdefault("flush_interval", 0.05)
        options.setdefault("backoff_base", 0.01)
        options.setdefault("backoff_max", 0.05)
        options.setdefault("close_timeout", 5.0)
        handler = HiltSheetsHandler(**options)
        made.append(handler)
        return handler

    yield build
    for handler in made:
        handler.close()


def completion(n: int, **ext: Any) -> Event:
    extensions = {"call_id": f"call-{n}", "reply_to": f"prompt-{n}", "provider": "openai", "operation": "chat",
                  "model": "gpt-4o-mini", "response_model": "gpt-4o-mini-2024-07-18", "status_code": 200,
                  "finish_reason": "stop", "request_id": f"req-{n}"}
    extensions.update(ext)
    return Event(
        session_id="conv_abc", actor={"type": "agent", "id": "gpt-4o-mini-2024-07-18"}, action="completion",
        content={"text": f"answer {n}"},
        metrics={"tokens": {"prompt": 10 + n, "completion": 5, "total": 15 + n, "cached": 0, "reasoning": None},
                 "cost_usd": 0.00012, "latency_ms": 321.5},
        extensions=extensions,
    )


def send(handler: logging.Handler, event: Event) -> None:
    record = logging.LogRecord("hilt", logging.INFO, __file__, 0, "event", None, None)
    record.hilt_event = event  # type: ignore[attr-defined]
    handler.handle(record)


def rows_of(server: SheetsServer, title: str = "Logs") -> list[dict[str, Any]]:
    values = server.values(SHEET, title)
    header = values[0]
    return [dict(zip(header, row)) for row in values[1:]]


def appends(server: SheetsServer) -> int:
    return sum(1 for method, path in server.requests if method == "POST" and path.endswith(":append"))


# --- rows, header, values -------------------------------------------------------------------


def test_rows_arrive_batched_with_values_and_numbers(fresh: SheetsServer, make_handler: Callable[..., Any]) -> None:
    handler = make_handler(batch_size=50, flush_interval=30.0)
    before = appends(fresh)
    events = [completion(n) for n in range(5)]
    for event in events:
        send(handler, event)
    handler.flush()
    assert appends(fresh) - before == 1  # five rows, one request
    values = fresh.values(SHEET, "Logs")
    assert values[0] == list(DEFAULT_COLUMNS)
    rows = rows_of(fresh)
    assert [row["event_id"] for row in rows] == [event.event_id for event in events]
    first = rows[0]
    assert first["conversation_id"] == first["session"] == "conv_abc"
    assert first["speaker"] == "gpt-4o-mini-2024-07-18"
    assert first["message"] == "answer 0"
    assert first["reply_to"] == "prompt-0"
    assert first["model"] == "gpt-4o-mini-2024-07-18"
    assert first["tokens_in"] == 10 and isinstance(first["tokens_in"], int)
    assert first["status_code"] == 200 and isinstance(first["status_code"], int)
    assert first["cost_usd"] == 0.00012 and isinstance(first["cost_usd"], float)
    assert first["latency_ms"] == 321.5


def test_batch_size_sends_full_batches(fresh: SheetsServer, make_handler: Callable[..., Any]) -> None:
    handler = make_handler(batch_size=3, flush_interval=30.0)
    before = appends(fresh)
    for n in range(7):
        send(handler, completion(n))
    handler.flush()
    assert appends(fresh) - before == 3  # 3 + 3 + 1
    assert len(rows_of(fresh)) == 7


def test_chosen_columns_and_existing_header_order(
    fresh: SheetsServer, make_handler: Callable[..., Any], server: SheetsServer
) -> None:
    server.add_spreadsheet(SHEET, shared_with=[EMAIL], worksheets={"Logs": [["model", "notes", "event_id"]]})
    handler = make_handler(columns=["event_id", "model", "tokens_in", "provider"])
    event = completion(1)
    send(handler, event)
    handler.flush()
    values = fresh.values(SHEET, "Logs")
    assert values[0] == ["model", "notes", "event_id", "tokens_in", "provider"]
    assert values[1] == ["gpt-4o-mini-2024-07-18", "", event.event_id, 11, "openai"]
    # only the header row was read at start-up, never the whole sheet
    reads = [path for method, path in server.requests if method == "GET" and "/values/" in path]
    assert reads and all(path.endswith("!1:1") for path in reads)


def test_missing_worksheet_is_created_with_header(fresh: SheetsServer, make_handler: Callable[..., Any]) -> None:
    handler = make_handler(worksheet_name="Audit trail", columns=["event_id", "action", "cost_usd"])
    event = completion(2)
    send(handler, event)
    handler.flush()
    assert fresh.values(SHEET, "Audit trail") == [["event_id", "action", "cost_usd"],
                                                  [event.event_id, "completion", 0.00012]]


def test_unknown_column_lists_valid_ones(make_handler: Callable[..., Any]) -> None:
    with pytest.raises(HILTError, match="unknown column.*'tokens_in'"):
        make_handler(columns=["event_id", "nope"])


def test_formulas_escaped(fresh: SheetsServer, make_handler: Callable[..., Any]) -> None:
    handler = make_handler(columns=["event_id", "message", "user_id"])
    for n, text in enumerate(["=HYPERLINK(\"http://x\")", "+1", "-2", "@me", "plain"]):
        event = completion(n)
        event.content.text = text  # type: ignore[union-attr]
        send(handler, event)
    handler.flush()
    assert [row["message"] for row in rows_of(fresh)] == ["'=HYPERLINK(\"http://x\")", "'+1", "'-2", "'@me", "plain"]


def test_formulas_kept_when_escaping_off(fresh: SheetsServer, make_handler: Callable[..., Any]) -> None:
    handler = make_handler(columns=["event_id", "message"], escape_formulas=False)
    event = completion(0)
    event.content.text = "=1+1"  # type: ignore[union-attr]
    send(handler, event)
    handler.flush()
    assert rows_of(fresh)[0]["message"] == "=1+1"


# --- failures, retries, spill ----------------------------------------------------------------


def test_429_then_success_no_loss_no_duplicate(fresh: SheetsServer, make_handler: Callable[..., Any]) -> None:
    handler = make_handler()
    fresh.fail_next_appends(2, status=429)
    events = [completion(n) for n in range(4)]
    for event in events:
        send(handler, event)
    handler.flush()
    handler.flush()  # the first flush returns once an attempt failed; the retry follows
    assert [row["event_id"] for row in rows_of(fresh)] == [event.event_id for event in events]


@pytest.mark.parametrize("fault", ["apply_then_500", "apply_then_drop"])
def test_applied_then_failed_is_not_duplicated(
    fault: str, fresh: SheetsServer, make_handler: Callable[..., Any]
) -> None:
    handler = make_handler()
    send(handler, completion(0))
    handler.flush()
    if fault == "apply_then_500":
        fresh.apply_then_fail_next_appends(1, status=500)
    else:
        fresh.drop_next_appends(1, apply=True)
    events = [completion(n) for n in range(1, 4)]
    for event in events:
        send(handler, event)
    for _ in range(3):
        handler.flush()
    ids = [row["event_id"] for row in rows_of(fresh)]
    assert ids[1:] == [event.event_id for event in events]
    assert len(ids) == len(set(ids))
    # the check read the event_id column's tail before re-sending
    assert any(method == "GET" and "!C" in path and path.endswith(":C") for method, path in fresh.requests)


def test_dropped_connection_without_apply_is_resent(fresh: SheetsServer, make_handler: Callable[..., Any]) -> None:
    handler = make_handler()
    fresh.drop_next_appends(1)
    events = [completion(n) for n in range(3)]
    for event in events:
        send(handler, event)
    for _ in range(3):
        handler.flush()
    assert [row["event_id"] for row in rows_of(fresh)] == [event.event_id for event in events]


def test_outage_spills_then_replays_in_order(fresh: SheetsServer, make_handler: Callable[..., Any]) -> None:
    handler = make_handler(max_retries=2, batch_size=4)
    first = [completion(n) for n in range(3)]
    for event in first:
        send(handler, event)
    handler.flush()
    fresh.unavailable = True
    during = [completion(n) for n in range(3, 13)]
    for event in during[:5]:
        send(handler, event)
    handler.flush()  # fails, retries, spills
    for event in during[5:]:
        send(handler, event)
    handler.flush()
    spill = Path(handler.spill_path)
    lines = [json.loads(line) for line in spill.read_text().splitlines()]
    assert [line["event_id"] for line in lines] == [event.event_id for event in during]
    assert stat.S_IMODE(os.stat(spill).st_mode) == 0o600
    fresh.unavailable = False
    later = [completion(n) for n in range(13, 15)]
    for event in later:
        send(handler, event)
    for _ in range(5):
        handler.flush()
    ids = [row["event_id"] for row in rows_of(fresh)]
    assert ids == [event.event_id for event in first + during + later]
    assert spill.read_text() == ""


def test_queue_bound_spills_in_order(fresh: SheetsServer, make_handler: Callable[..., Any]) -> None:
    gate = fresh.hold_appends()
    handler = make_handler(max_queue=3, batch_size=2, flush_interval=0.0)
    events = [completion(n) for n in range(9)]
    send(handler, events[0])
    assert fresh.held.wait(5)  # first batch in flight, held by the server
    for event in events[1:]:
        send(handler, event)
    assert Path(handler.spill_path).read_text().strip()  # past the bound: on disk
    gate.set()
    for _ in range(5):
        handler.flush()
    assert [row["event_id"] for row in rows_of(fresh)] == [event.event_id for event in events]


def test_close_with_sheet_down_leaves_rows_in_spill(
    fresh: SheetsServer, make_handler: Callable[..., Any], tmp_path: Path
) -> None:
    handler = make_handler(max_retries=50, flush_interval=30.0, close_timeout=2.0)
    fresh.unavailable = True
    events = [completion(n) for n in range(4)]
    for event in events:
        send(handler, event)
    handler.close()
    lines = [json.loads(line) for line in Path(handler.spill_path).read_text().splitlines()]
    assert [line["event_id"] for line in lines] == [event.event_id for event in events]
    # the next handler on the same spill file replays them
    fresh.unavailable = False
    again = make_handler(spill_path=handler.spill_path)
    again.flush()
    assert [row["event_id"] for row in rows_of(fresh)] == [event.event_id for event in events]
    assert Path(handler.spill_path).read_text() == ""


def test_emit_never_blocks_on_a_slow_sheet(fresh: SheetsServer, make_handler: Callable[..., Any]) -> None:
    gate = fresh.hold_appends()
    handler = make_handler(batch_size=1, flush_interval=0.0)
    send(handler, completion(0))
    assert fresh.held.wait(5)  # the worker's append is held by the server
    done = threading.Event()

    def more() -> None:
        for n in range(1, 50):
            send(handler, completion(n))
        done.set()

    threading.Thread(target=more, daemon=True).start()
    assert done.wait(10)  # all emits returned while the sheet still holds the request
    assert not gate.is_set()
    gate.set()
    for _ in range(3):
        handler.flush()
    assert len(rows_of(fresh)) == 50


def test_through_the_hilt_logger(fresh: SheetsServer, make_handler: Callable[..., Any]) -> None:
    handler = make_handler()
    logger = logging.getLogger("hilt")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        event = completion(7)
        hilt.emit(event)
        logger.info("a plain record without an event is ignored")
        handler.flush()
    finally:
        logger.removeHandler(handler)
    assert [row["event_id"] for row in rows_of(fresh)] == [event.event_id]


# --- construction errors --------------------------------------------------------------------


def test_not_found_404(server: SheetsServer, account: dict[str, Any], make_handler: Callable[..., Any]) -> None:
    with pytest.raises(HILTError, match="not found.*404"):
        make_handler(sheet_id="no-such-sheet")


def test_not_shared_403_names_client_email(server: SheetsServer, make_handler: Callable[..., Any]) -> None:
    server.add_spreadsheet("private-sheet", shared_with=["someone@else.example"])
    with pytest.raises(HILTError, match="403") as info:
        make_handler(sheet_id="private-sheet")
    assert EMAIL in str(info.value)


def test_bad_credentials_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(HILTError, match="credentials_path.*does not exist"):
        HiltSheetsHandler(sheet_id=SHEET, credentials_path=tmp_path / "missing.json")
    user_creds = tmp_path / "user.json"
    user_creds.write_text(json.dumps({"type": "authorized_user", "client_id": "x"}))
    with pytest.raises(HILTError, match="not a service-account key"):
        HiltSheetsHandler(sheet_id=SHEET, credentials_path=user_creds)
    garbage = tmp_path / "garbage.json"
    garbage.write_text("{not json")
    with pytest.raises(HILTError, match="credentials_path"):
        HiltSheetsHandler(sheet_id=SHEET, credentials_path=garbage)
    with pytest.raises(HILTError, match="credentials_json"):
        HiltSheetsHandler(sheet_id=SHEET, credentials_json="{nope")
    monkeypatch.delenv("GOOGLE_CREDENTIALS_PATH", raising=False)
    with pytest.raises(HILTError, match="GOOGLE_CREDENTIALS_PATH"):
        HiltSheetsHandler(sheet_id=SHEET)


def test_no_sheet_id(monkeypatch: pytest.MonkeyPatch, make_client: Callable[..., Any]) -> None:
    monkeypatch.delenv("GOOGLE_SHEET_ID", raising=False)
    with pytest.raises(HILTError, match="sheet_id.*GOOGLE_SHEET_ID"):
        HiltSheetsHandler(client=make_client())


def test_sheet_id_from_env(
    fresh: SheetsServer, monkeypatch: pytest.MonkeyPatch, make_handler: Callable[..., Any]
) -> None:
    monkeypatch.setenv("GOOGLE_SHEET_ID", SHEET)
    handler = make_handler(sheet_id=None)
    assert handler.sheet_id == SHEET


def test_wrong_key_is_refused_by_token_endpoint(
    server: SheetsServer, account: dict[str, Any], make_client: Callable[..., Any], tmp_path: Path
) -> None:
    forged, _ = make_service_account(server.token_uri, EMAIL)  # same email, a key the server doesn't know
    with pytest.raises(HILTError, match="refused"):
        HiltSheetsHandler(sheet_id=SHEET, client=make_client(forged), spill_path=tmp_path / "s.jsonl")


def test_instrument_builds_the_sheets_session(
    fresh: SheetsServer, account: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # instrument() builds its own client from the key; with no route to the local server it must fail clearly
    # or not at all -- here only the configuration errors are checked.
    with pytest.raises(HILTError, match="not a service-account key"):
        hilt.instrument(sheet_id=SHEET, credentials_json={"type": "authorized_user"}, providers=[])
