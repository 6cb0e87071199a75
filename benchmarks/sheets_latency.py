"""Does a slow Google Sheets API slow the caller? Median ``hilt.emit`` time with and without the handler.

The real gspread + google-auth talk to hilt's local Sheets server (``hilt.testing.sheets_server``)
whose appends take ``--delay`` seconds (default 2). Both sides are measured in the same run.
Run: ``python benchmarks/sheets_latency.py`` (needs ``hilt[sheets]`` and ``cryptography``).
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
from pathlib import Path

import gspread
import requests
from google.auth.transport.requests import AuthorizedSession, Request
from google.oauth2.service_account import Credentials

import hilt
from hilt.handlers.sheets import HiltSheetsHandler
from hilt.testing.sheets_server import SheetsServer, make_service_account

EMAIL = "bench@hilt-bench.iam.gserviceaccount.com"


def median_emit_us(count: int) -> float:
    samples = []
    for i in range(count):
        event = hilt.Event(action="completion", content={"text": f"answer {i}"},
                           metrics={"tokens": {"prompt": 10, "completion": 5, "total": 15}, "cost_usd": 0.0001, "latency_ms": 800.0},
                           extensions={"call_id": f"c{i}", "status_code": 200, "model": "gpt-4o"})
        start = time.perf_counter()
        hilt.emit(event)
        samples.append((time.perf_counter() - start) * 1e6)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--delay", type=float, default=2.0, help="seconds each Sheets append takes")
    parser.add_argument("--events", type=int, default=2000)
    args = parser.parse_args()
    logger = logging.getLogger("hilt")
    with SheetsServer() as server, tempfile.TemporaryDirectory() as folder:
        info, public_key = make_service_account(server.token_uri, EMAIL)
        server.add_service_account(EMAIL, public_key)
        server.add_spreadsheet("bench", shared_with=[EMAIL])
        creds = Credentials.from_service_account_info(info, scopes=["https://www.googleapis.com/auth/spreadsheets"])
        auth_session = requests.Session()
        auth_session.mount("https://", server.adapter())
        session = AuthorizedSession(creds, auth_request=Request(session=auth_session))
        session.mount("https://", server.adapter())
        client = gspread.Client(auth=creds, session=session)

        baseline = median_emit_us(args.events)  # no handler on the 'hilt' logger
        server.append_delay = args.delay
        handler = HiltSheetsHandler(sheet_id="bench", client=client, spill_path=str(Path(folder) / "spill.jsonl"))
        logger.addHandler(handler)
        with_sheets = median_emit_us(args.events)
        logger.removeHandler(handler)
        start = time.perf_counter()
        handler.close()
        drained = time.perf_counter() - start
        rows = len(server.values("bench", "Logs")) - 1
        spill = Path(handler.spill_path)
        spilled = sum(1 for line in spill.read_text().splitlines() if line.strip()) if spill.exists() else 0
    print(f"Sheets append latency {args.delay:.1f} s, {args.events} events")
    print(f"median hilt.emit without handler: {baseline:8.1f} µs")
    print(f"median hilt.emit with Sheets:     {with_sheets:8.1f} µs  (ratio {with_sheets / baseline:.2f})")
    print(f"after close() ({drained:.1f} s, bounded by close_timeout): {rows} rows in the sheet, "
          f"{spilled} in the spill file for the next start; {args.events - rows - spilled} lost")


if __name__ == "__main__":
    main()
