"""``hilt report``: the HTML page, its figures (equal to ``hilt stats``), escaping, bad input, and a real browser.

The browser test runs Debian's ``chromium`` headless (``.ci/run`` installs it) and checks in the
dumped DOM that plotly drew every chart; it is skipped where chromium is not on PATH.
"""

from __future__ import annotations

import gzip
import html
import json
import math
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from hilt.cli import main
from hilt.commands import stats
from hilt.demo import run_demo

pytest.importorskip("plotly", reason='hilt report needs plotly: pip install "hilt[report]"')

CHARTS = ("chart-cost-day", "chart-cost-model", "chart-calls", "chart-latency")
EVIL_CONVERSATION = "conv_<script>document.title='pwned'</script>"
EVIL_MODEL = "<img src=x onerror=\"document.title='pwned'\">"


@pytest.fixture(scope="module")
def demo_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("report") / "demo.jsonl"
    run_demo(path)
    return path


def _event(action: str, ts: str, session: str, cid: str, model: str, **extra: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "hilt_version": "1.0", "event_id": f"{cid}-{action}", "timestamp": ts, "session_id": session,
        "actor": {"type": "human", "id": "user"} if action == "prompt" else {"type": "agent", "id": model},
        "action": action, "content": {"text": "hi"}, "extensions": {"call_id": cid, "model": model},
    }
    for key, value in extra.items():
        if key == "status_code":
            event["extensions"]["status_code"] = value
        elif key == "error":
            event["extensions"]["error"] = value
        else:
            event[key] = value
    return event


def _call(ts: str, session: str, cid: str, model: str, cost: float | None, latency: float, total: int,
          status: int = 200) -> list[dict[str, Any]]:
    metrics = {"tokens": {"prompt": total // 2, "completion": total - total // 2, "total": total}, "cost_usd": cost,
               "latency_ms": latency}
    return [_event("prompt", ts, session, cid, model),
            _event("completion", ts, session, cid, model, metrics=metrics, status_code=status)]


@pytest.fixture
def crafted(tmp_path: Path) -> list[Path]:
    """Two files (one gzip) over three days: errors, an unanswered prompt, junk lines, hostile ids and models."""
    first = tmp_path / "app.jsonl.1.gz"
    second = tmp_path / "app.jsonl"
    events = [
        *_call("2025-03-01T10:00:00.000000Z", "conv_a", "c1", "gpt-4o", 0.002, 120.0, 30),
        *_call("2025-03-01T11:30:00.000000Z", "conv_a", "c2", "gpt-4o-mini", 0.0001, 40.5, 12),
        *_call("2025-03-02T09:00:00.000000Z", EVIL_CONVERSATION, "c3", EVIL_MODEL, 0.05, 900.0, 200),
        _event("prompt", "2025-03-02T09:05:00.000000Z", "conv_b", "c4", "gpt-4o"),
        _event("system", "2025-03-02T09:05:01.000000Z", "conv_b", "c4", "gpt-4o",
               metrics={"latency_ms": 5.0}, error={"type": "RateLimitError"}, status_code=429),
    ]
    with gzip.open(first, "wt") as out:
        out.write("".join(json.dumps(e) + "\n" for e in events))
    later = [
        *_call("2025-03-03T08:00:00.000000Z", "conv_c", "c5", "gpt-4o", None, 60.0, 8),
        *_call("2025-03-03T08:01:00.000000Z", "conv_c", "c6", "gpt-4o", 0.001, 75.0, 9, status=500),
        _event("prompt", "2025-03-03T08:02:00.000000Z", "conv_d", "c7", "gpt-4o"),  # never answered
        {**_call("2025-03-03T08:03:00.000000Z", "conv_c", "c8", "gpt-4o", 0.1, 1.0, 1)[1],
         "timestamp": 12345},  # a number for a timestamp: counted, kept off the time axis
    ]
    lines = [json.dumps(e) for e in later] + ["not json", "[1, 2]", ""]
    second.write_text("\n".join(lines) + "\n")
    return [first, second]


def _report(capsys: pytest.CaptureFixture[str], out: Path, *files: Path | str, extra: tuple[str, ...] = ()) -> str:
    status = main(["report", *map(str, files), "-o", str(out), *extra])
    captured = capsys.readouterr()
    assert status == 0, captured.err
    assert "wrote" in captured.out
    return out.read_text(encoding="utf-8")


def _summary(page: str) -> dict[str, Any]:
    match = re.search(r'<script type="application/json" id="hilt-summary">(.*?)</script>', page)
    assert match
    return json.loads(match.group(1))


def _assert_same_figures(page: str, paths: list[Path]) -> None:
    expected, _scan = stats.compute([str(p) for p in paths])
    got = _summary(page)
    for key in ("files", "events", "calls", "errors", "errors_by_status", "tokens", "cost_unknown",
                "latency_ms", "ttft_ms", "skipped_lines"):
        assert got.get(key) == expected.get(key), key
    assert math.isclose(got["cost_usd"], expected["cost_usd"], rel_tol=1e-12, abs_tol=1e-15)
    shown = dict(re.findall(r'data-key="(\w+)" data-value="([^"]*)"', page))
    assert int(shown["calls"]) == expected["calls"]
    assert int(shown["errors"]) == expected["errors"]
    assert int(shown["tokens"]) == expected["tokens"]["total"]
    assert math.isclose(float(shown["cost_usd"]), expected["cost_usd"], rel_tol=1e-9)


def test_figures_equal_stats_on_demo(demo_log: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    page = _report(capsys, tmp_path / "r.html", demo_log)
    _assert_same_figures(page, [demo_log])
    assert _summary(page)["calls"] == 8 and _summary(page)["errors"] == 1
    for chart in CHARTS:
        assert page.count(f'id="{chart}"') == 1
    assert page.count('<tr class="conversation">') == 7
    assert "Generated " in page and str(demo_log) in page


def test_figures_equal_stats_on_messy_logs(crafted: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["report", str(crafted[0].parent / "app.jsonl*"), "-o", str(tmp_path / "r.html")])
    captured = capsys.readouterr()
    assert status == 0, captured.err
    assert "2 unreadable lines skipped" in captured.err
    page = (tmp_path / "r.html").read_text(encoding="utf-8")
    _assert_same_figures(page, crafted)
    summary = _summary(page)
    assert summary["calls"] == 8 and summary["errors"] == 2  # the unanswered prompt is a call; 429 and 500
    assert "2025-03-01 10:00 to 2025-03-03 08:02 UTC" in page  # the numeric timestamp is not on the axis
    assert "Calls and errors per hour" in page  # 46 hours: one bar per hour
    rows = re.findall(r'<tr class="conversation"><td>\d+</td><td class="text">(.*?)</td>', page)
    assert rows == ["conv_c", html.escape(EVIL_CONVERSATION), "conv_a", "conv_b", "conv_d"]  # costliest first


def test_log_text_is_escaped(crafted: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    page = _report(capsys, tmp_path / "r.html", *crafted)
    assert "<script>document.title" not in page
    assert "<img src=x" not in page
    assert html.escape(EVIL_CONVERSATION) in page  # in the table, as text
    assert html.escape(EVIL_MODEL) in page  # in the table's models column
    # In the charts' JSON the model is HTML-escaped (plotly reads tags in labels) and '<' is \u003c.
    assert json.dumps(html.escape(EVIL_MODEL)).strip('"') in page.replace("\\u0026", "&")


def test_page_is_self_contained(demo_log: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    page = _report(capsys, tmp_path / "r.html", demo_log)
    assert not re.search(r"<script[^>]*\bsrc\s*=", page, re.I)
    assert not re.search(r"<link\b", page, re.I)
    assert not re.search(r"<(img|iframe|embed|object)\b", page, re.I)
    assert "@import" not in page
    assert page.count("window.PlotlyConfig") == 1  # plotly.js inlined once, not once per chart
    assert len(page) > 1_000_000  # ... and really inlined


def test_bad_input(demo_log: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "r.html"
    cases = [
        ([str(tmp_path / "missing.jsonl")], 2, "no such file"),
        ([str(tmp_path)], 2, "is a directory"),
        ([str(tmp_path / "*.nothing")], 2, "no file matches"),
    ]
    text = tmp_path / "notes.txt"
    text.write_text("hello\nworld\n")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    cases += [([str(text)], 1, "not a hilt JSONL log"), ([str(empty)], 1, "no events")]
    for files, expected, message in cases:
        status = main(["report", *files, "-o", str(out)])
        err = capsys.readouterr().err
        assert status == expected, (files, err)
        assert err.startswith("hilt report: ") and message in err and "Traceback" not in err
        assert not out.exists()
    status = main(["report", str(demo_log), "-o", str(tmp_path / "no" / "such" / "r.html")])
    assert status == 2 and "no such directory" in capsys.readouterr().err


def test_without_plotly(demo_log: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                        monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in sys.modules if n == "plotly" or n.startswith("plotly.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "plotly", None)  # `import plotly...` now raises ImportError
    status = main(["report", str(demo_log), "-o", str(tmp_path / "r.html")])
    err = capsys.readouterr().err
    assert status == 2
    assert 'pip install "hilt[report]"' in err and "Traceback" not in err
    assert not (tmp_path / "r.html").exists()


def _section(dom: str, chart: str) -> str:
    start = dom.index(f'id="{chart}"')
    return dom[start:dom.index("</section>", start)]


@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium is not on PATH (.ci/run installs it)")
def test_charts_render_in_chromium(demo_log: Path, crafted: list[Path], tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    report = tmp_path / "report.html"
    page = _report(capsys, report, demo_log, *crafted)
    conversations = page.count('<tr class="conversation">')
    assert conversations == 7 + 5
    command = [
        "chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000", "--dump-dom", report.as_uri(),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    dom = done.stdout
    assert done.returncode == 0 and "</html>" in dom, done.stderr[-2000:]
    for chart in CHARTS:
        section = _section(dom, chart)
        assert "js-plotly-plot" in section, chart  # plotly ran on this div
        assert section.count('<svg class="main-svg"') >= 1, chart  # ... and drew it
        assert 'class="point"' in section, chart  # with bars, not just empty axes
    assert dom.count('<svg class="main-svg"') >= len(CHARTS)
    assert dom.count('<tr class="conversation">') == conversations
    assert "pwned" not in dom.split("</title>")[0]  # no script from the log ran
    assert html.escape(EVIL_CONVERSATION, quote=False) in dom  # shown as text (the DOM dump does not escape quotes)
