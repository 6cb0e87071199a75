"""``hilt report FILE... -o report.html``: one self-contained HTML page of charts about the logs.

The page works offline: plotly.js is inlined once (about 4.8 MB), no CDN, no external style sheet.
It needs the ``report`` extra (``pip install "hilt[report]"``, which installs plotly).

The data come from one pass over the files: ``hilt stats``' own scan (``stats.compute``) gives the
summary figures, and an observer it calls with each event gathers the series and conversations.

Everything from the log (conversation ids, model names, status codes) is untrusted: it is
HTML-escaped in the page, and passed to plotly escaped too (plotly reads a few HTML tags in labels).
"""

from __future__ import annotations

import argparse
import html
import os
import re
import sys
from datetime import datetime, timezone
from typing import Any

import orjson

from .. import __version__
from . import stats
from ._files import CLIError, expand
from .stats import NONE_KEY, _Group, _cost, _number, model_of

__all__ = ["add_parser", "run", "collect", "render_html"]

INSTALL_HINT = 'pip install "hilt[report]"'
TOP_DEFAULT = 20
#: A timestamp usable on a time axis: ``YYYY-MM-DD?HH:MM`` at the start.
_TIME = re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}")
#: Bar width of the calls-over-time chart by the span of the log: minutes, hours, then days.
_BUCKETS = ((3 * 3600, 16, "minute"), (4 * 86400, 13, "hour"), (None, 10, "day"))


class _Conversation:
    __slots__ = ("calls", "errors", "tokens", "cost", "first", "last", "models")

    def __init__(self) -> None:
        self.calls = 0
        self.errors = 0
        self.tokens = 0
        self.cost = 0.0
        self.first: str | None = None
        self.last: str | None = None
        self.models: dict[str, None] = {}  # ordered set

    def seen(self, ts: str | None, model: str | None) -> None:
        if ts is not None:
            if self.first is None or ts < self.first:
                self.first = ts
            if self.last is None or ts > self.last:
                self.last = ts
        if model is not None:
            self.models[model] = None


class ReportData:
    """What one pass over the files gathers for the page: ``hilt stats``' figures plus series and conversations."""

    def __init__(self, paths: list[str]) -> None:
        self.paths = paths
        self.result: dict[str, Any] = {}  # what ``hilt stats --json`` prints for the same files
        self.total = _Group()  # its running totals (latencies for the histogram)
        self.events = 0
        self.skipped = 0
        self.first_skipped: str | None = None
        self.file_errors: list[str] = []
        self.first: str | None = None  # earliest and latest usable timestamps
        self.last: str | None = None
        self.cost_day_model: dict[str, dict[str, float]] = {}  # day -> model -> cost
        self.cost_model: dict[str, float] = {}
        self.calls_model: dict[str, int] = {}
        self.minutes: dict[str, list[int]] = {}  # "YYYY-MM-DDTHH:MM" -> [calls, errors]
        self.conversations: dict[str, _Conversation] = {}
        self.prompts: dict[Any, tuple[Any, Any, Any]] = {}  # call_id -> its prompt's (timestamp, model, session_id)
        self.closed: set[Any] = set()

    def summary(self) -> dict[str, Any]:
        """The figures ``hilt stats --json`` prints for the same files (without --by)."""
        return self.result

    def observe(self, data: dict[str, Any]) -> None:
        """Add one event to the series and conversations (``stats.compute`` counts the figures)."""
        try:
            self._observe(data)
        except (AttributeError, TypeError):
            pass  # a value of the wrong type: left out of the charts; ``hilt stats`` reports the line

    def _observe(self, data: dict[str, Any]) -> None:
        ext = data.get("extensions") or _EMPTY
        action = data.get("action")
        if action == "prompt":
            cid = ext.get("call_id")
            if cid is not None:
                self.prompts[cid] = (data.get("timestamp"), ext.get("model"), data.get("session_id"))
            return
        if action == "completion":
            failed = False
        elif action == "system" and "error" in ext:
            failed = True
        else:
            return
        cid = ext.get("call_id")
        if cid is not None:
            self.closed.add(cid)
        status = ext.get("status_code")
        failed = failed or (status is not None and status >= 400)
        metrics = data.get("metrics") or _EMPTY
        tokens = metrics.get("tokens") or _EMPTY
        call_tokens = tokens.get("total") or 0
        call_cost = metrics.get("cost_usd") or 0.0
        model = model_of(data, ext, action)
        model = model if type(model) is str else NONE_KEY
        session = data.get("session_id")
        session = session if type(session) is str and session else NONE_KEY
        ts = data.get("timestamp")
        if type(ts) is not str or not _TIME.match(ts):
            ts = None
        self.calls_model[model] = self.calls_model.get(model, 0) + 1
        self.cost_model[model] = self.cost_model.get(model, 0.0) + call_cost
        conversation = self.conversations.get(session)
        if conversation is None:
            conversation = self.conversations[session] = _Conversation()
        conversation.calls += 1
        conversation.errors += failed
        conversation.tokens += call_tokens
        conversation.cost += call_cost
        conversation.seen(ts, model)
        if ts is not None:
            self._span(ts)
            day = self.cost_day_model.setdefault(ts[:10], {})
            day[model] = day.get(model, 0.0) + call_cost
            bucket = self.minutes.setdefault(ts[:16], [0, 0])
            bucket[0] += 1
            bucket[1] += failed

    def _span(self, ts: str) -> None:
        if self.first is None or ts < self.first:
            self.first = ts
        if self.last is None or ts > self.last:
            self.last = ts


_EMPTY: dict[str, Any] = {}


def collect(paths: list[str]) -> ReportData:
    """One pass over the files: the summary (``stats.compute`` itself), the series and the conversations."""
    data = ReportData(paths)
    data.result, scan = stats.compute(paths, None, None, data.observe)
    data.total = scan.groups.get("") or _Group()
    data.events, data.skipped, data.first_skipped = scan.events, scan.skipped, scan.first_skipped
    data.file_errors = scan.file_errors
    for cid, (ts, model, session) in data.prompts.items():
        if cid in data.closed:
            continue
        minute = ts[:16] if type(ts) is str and _TIME.match(ts) else None
        model = model if type(model) is str and model else NONE_KEY
        session = session if type(session) is str and session else NONE_KEY
        data.calls_model[model] = data.calls_model.get(model, 0) + 1  # an unanswered prompt is a call
        conversation = data.conversations.get(session)
        if conversation is None:
            conversation = data.conversations[session] = _Conversation()
        conversation.calls += 1
        conversation.seen(minute, model)
        if minute is not None:
            data.minutes.setdefault(minute, [0, 0])[0] += 1
            data._span(minute)
    data.prompts.clear()
    data.closed.clear()
    return data


# --- the page -------------------------------------------------------------------------------

def _import_plotly() -> Any:
    try:
        import plotly.graph_objects as go
    except ImportError:
        raise CLIError(f"the report needs plotly, which is not installed: {INSTALL_HINT}", status=2) from None
    return go


def _label(value: str) -> str:
    """A log value as plotly text: escaped, so that plotly's pseudo-HTML (<b>, <a href>) is shown, not run."""
    return html.escape(value, quote=True)


def _seconds(start: str | None, end: str | None) -> float:
    try:
        a = datetime.fromisoformat(start.rstrip("Z"))  # type: ignore[union-attr]
        b = datetime.fromisoformat(end.rstrip("Z"))  # type: ignore[union-attr]
    except (AttributeError, ValueError):
        return 0.0
    return (b - a).total_seconds()


def _time_series(data: ReportData) -> tuple[str, list[str], list[int], list[int]]:
    """Calls and errors per minute, hour or day, whichever suits the span of the log."""
    span = _seconds(data.first, data.last)
    width, unit = 10, "day"
    for limit, chars, name in _BUCKETS:
        if limit is None or span <= limit:
            width, unit = chars, name
            break
    buckets: dict[str, list[int]] = {}
    for minute, (calls, errors) in data.minutes.items():
        bucket = buckets.setdefault(minute[:width], [0, 0])
        bucket[0] += calls
        bucket[1] += errors
    keys = sorted(buckets)
    labels = [key[:10] + " " + key[11:] + (":00" if unit == "hour" else "") if len(key) > 10 else key for key in keys]
    return unit, labels, [buckets[k][0] - buckets[k][1] for k in keys], [buckets[k][1] for k in keys]


def _charts(data: ReportData, go: Any) -> list[tuple[str, str, Any]]:
    """(id, title, figure) of each chart."""
    layout = {"height": 380, "margin": {"l": 60, "r": 20, "t": 40, "b": 60}, "template": "plotly_white",
              "legend": {"orientation": "h", "y": -0.2}}
    charts = []
    days = sorted(data.cost_day_model)
    models = sorted(data.cost_model, key=lambda m: (-data.cost_model[m], m))
    cost_day = go.Figure(layout={**layout, "barmode": "stack", "yaxis": {"title": {"text": "USD"}},
                                 "xaxis": {"type": "category"}})
    for model in models:
        cost_day.add_trace(go.Bar(name=_label(model), x=days, y=[data.cost_day_model[d].get(model, 0.0) for d in days],
                                  hovertemplate="%{x}<br>$%{y:.6f}<extra>%{fullData.name}</extra>"))
    charts.append(("chart-cost-day", "Cost per day, by model (USD)", cost_day))

    cost_model = go.Figure(layout={**layout, "xaxis": {"title": {"text": "USD"}}, "yaxis": {"automargin": True}})
    cost_model.add_trace(go.Bar(x=[data.cost_model[m] for m in models], y=[_label(m) for m in models], orientation="h",
                                customdata=[data.calls_model.get(m, 0) for m in models],
                                hovertemplate="%{y}<br>$%{x:.6f} in %{customdata} calls<extra></extra>"))
    cost_model.update_yaxes(autorange="reversed")
    charts.append(("chart-cost-model", "Cost per model (USD)", cost_model))

    unit, labels, ok, errors = _time_series(data)
    calls = go.Figure(layout={**layout, "barmode": "stack", "yaxis": {"title": {"text": f"calls per {unit}"}},
                              "xaxis": {"type": "category"}})
    calls.add_trace(go.Bar(name="ok", x=labels, y=ok, marker={"color": "#2ca02c"}))
    calls.add_trace(go.Bar(name="errors", x=labels, y=errors, marker={"color": "#d62728"}))
    charts.append(("chart-calls", f"Calls and errors per {unit} (UTC)", calls))

    latency = go.Figure(layout={**layout, "xaxis": {"title": {"text": "latency (ms)"}}, "yaxis": {"title": {"text": "calls"}},
                                "bargap": 0.05})
    latency.add_trace(go.Histogram(x=data.total.latency, nbinsx=40, name="latency", marker={"color": "#1f77b4"}))
    pct = data.total.to_dict()["latency_ms"]
    for name, dash in (("p50", "dash"), ("p95", "dot")):
        if pct[name] is not None:
            latency.add_vline(x=pct[name], line_dash=dash, line_color="#555",
                              annotation_text=f"{name} {pct[name]:.1f} ms", annotation_position="top right")
    charts.append(("chart-latency", "Latency distribution (completions and errors)", latency))
    return charts


_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0; color: #222; background: #f6f7f9; }
header, main, footer { max-width: 1200px; margin: 0 auto; padding: 16px 24px; }
h1 { margin: 8px 0 4px; font-size: 24px; }
.sub { color: #555; font-size: 14px; word-break: break-all; }
.figures { display: flex; flex-wrap: wrap; gap: 12px; margin: 8px 0; }
.figure { background: #fff; border: 1px solid #ddd; border-radius: 6px; padding: 10px 16px; min-width: 130px; }
.figure .value { font-size: 22px; font-weight: 600; }
.figure .name { color: #666; font-size: 13px; }
.grid { display: grid; grid-template-columns: repeat(2, minmax(0, 1fr)); gap: 16px; margin-bottom: 16px; }
@media (max-width: 900px) { .grid { grid-template-columns: minmax(0, 1fr); } }
section.chart { min-width: 0; }
section.chart, section.table { background: #fff; border: 1px solid #ddd; border-radius: 6px; padding: 8px 12px; }
h2 { font-size: 16px; margin: 6px 0; }
table { border-collapse: collapse; width: 100%; font-size: 13px; }
th, td { padding: 4px 8px; border-bottom: 1px solid #eee; text-align: right; white-space: nowrap; }
th:first-child, td:first-child, td.text, th.text { text-align: left; }
td.text { white-space: normal; word-break: break-all; }
footer { color: #777; font-size: 12px; }
"""


def _figure(key: str, name: str, value: Any, shown: str) -> str:
    return (f'<div class="figure" data-key="{key}" data-value="{html.escape(str(value), quote=True)}">'
            f'<div class="value">{html.escape(shown)}</div><div class="name">{html.escape(name)}</div></div>')


def _short_time(ts: str | None) -> str:
    return "-" if ts is None else ts[:10] + " " + ts[11:19]


def render_html(data: ReportData, top: int = TOP_DEFAULT, generated: datetime | None = None) -> str:
    """The whole page: title, summary figures, the charts (plotly.js inlined once), top conversations."""
    go = _import_plotly()
    summary = data.summary()
    generated = generated or datetime.now(timezone.utc)
    esc = html.escape
    if data.first and data.last:
        period = f"{_short_time(data.first)[:16]} to {_short_time(data.last)[:16]} UTC"
    else:
        period = "no timestamps"
    files = ", ".join(data.paths)
    errors = summary["errors"]
    rate = f" ({100 * errors / summary['calls']:.1f}%)" if summary["calls"] else ""
    lat = summary["latency_ms"]
    unknown = summary["cost_unknown"]
    figures = [
        _figure("calls", "calls", summary["calls"], f"{summary['calls']:,}"),
        _figure("errors", "errors" + rate, errors, f"{errors:,}"),
        _figure("tokens", "tokens (total)", summary["tokens"]["total"], f"{summary['tokens']['total']:,}"),
        _figure("cost_usd", "cost (USD)" + (f", {unknown} calls without a price" if unknown else ""),
                summary["cost_usd"], "$" + _cost(summary["cost_usd"])),
        _figure("latency_p50", "latency p50 (ms)", lat["p50"], _number(lat["p50"])),
        _figure("latency_p95", "latency p95 (ms)", lat["p95"], _number(lat["p95"])),
        _figure("events", "events", summary["events"], f"{summary['events']:,}"),
    ]
    config = {"displaylogo": False, "responsive": True}
    sections = []
    for index, (div_id, title, fig) in enumerate(_charts(data, go)):
        div = fig.to_html(include_plotlyjs=index == 0, full_html=False, config=config, div_id=div_id,
                          default_height="380px", default_width="100%")
        sections.append(f'<section class="chart" id="{div_id}-section"><h2>{esc(title)}</h2>\n{div}\n</section>')

    ranked = sorted(data.conversations.items(), key=lambda item: (-item[1].cost, -item[1].calls, item[0]))[:top]
    rows = []
    for rank, (session, conv) in enumerate(ranked, 1):
        rows.append(
            "<tr class=\"conversation\">"
            f"<td>{rank}</td><td class=\"text\">{esc(session)}</td><td>{conv.calls}</td><td>{conv.errors}</td>"
            f"<td>{conv.tokens:,}</td><td>{esc(_cost(conv.cost))}</td>"
            f"<td>{esc(_short_time(conv.first))}</td><td>{esc(_short_time(conv.last))}</td>"
            f"<td class=\"text\">{esc(', '.join(conv.models))}</td></tr>"
        )
    table = (
        f'<section class="table" id="conversations"><h2>Top {len(ranked)} of {len(data.conversations)} conversations by cost</h2>'
        "<table><thead><tr><th>#</th><th class=\"text\">conversation</th><th>calls</th><th>errors</th><th>tokens</th>"
        "<th>cost (USD)</th><th>first (UTC)</th><th>last (UTC)</th><th class=\"text\">models</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table></section>"
    )
    summary_json = orjson.dumps(summary).decode().replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="hilt {esc(__version__)}">
<title>hilt report: {esc(period)}</title>
<style>{_STYLE}</style>
</head>
<body>
<header>
<h1>hilt report</h1>
<div class="sub" id="period">{esc(period)}</div>
<div class="sub" id="files">{len(data.paths)} file{'s' if len(data.paths) != 1 else ''}: {esc(files)}</div>
</header>
<main>
<div class="figures" id="summary">{''.join(figures)}</div>
<script type="application/json" id="hilt-summary">{summary_json}</script>
<div class="grid">
{chr(10).join(sections)}
</div>
{table}
</main>
<footer>Generated {esc(generated.strftime('%Y-%m-%d %H:%M:%S'))} UTC by hilt {esc(__version__)}; figures as in <code>hilt stats</code>.</footer>
</body>
</html>
"""


def add_parser(commands: Any) -> None:
    """Add ``report`` to the subcommands."""
    parser = commands.add_parser(
        "report", help="one self-contained HTML page of charts (cost, calls, errors, latency, conversations)",
        description="Write one self-contained HTML file (works offline) with the cost per day and per model, calls "
        f"and errors over time, the latency distribution and the top conversations by cost. Needs {INSTALL_HINT}.",
    )
    parser.add_argument("files", nargs="+", metavar="FILE", help="log files or globs ('logs/app.jsonl*')")
    parser.add_argument("-o", "--output", default="report.html", help="the HTML file to write (default: report.html)")
    parser.add_argument("--top", type=int, default=TOP_DEFAULT, help=f"conversations in the table (default: {TOP_DEFAULT})")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """``hilt report``: write the page; exit 1 when a file is not a log or there is no event at all."""
    _import_plotly()  # before reading gigabytes
    if args.top < 1:
        raise CLIError("--top: expected a positive number")
    output = args.output
    folder = os.path.dirname(output) or "."
    if os.path.isdir(output):
        raise CLIError(f"{output}: is a directory; pass a file name, e.g. '{os.path.join(output, 'report.html')}'")
    if not os.path.isdir(folder):
        raise CLIError(f"{output}: no such directory: {folder}")
    paths = expand(args.files)
    data = collect(paths)
    bad = [message for message in data.file_errors if "not a hilt JSONL log" in message]
    for message in data.file_errors:
        if message not in bad:
            print(f"hilt report: {message}", file=sys.stderr)
    if bad:
        raise CLIError("; ".join(bad), status=1)
    if not data.events:
        raise CLIError("no events in " + ", ".join(paths) + "; nothing to report", status=1)
    if data.skipped:
        print(f"hilt report: {data.skipped} unreadable lines skipped (first at {data.first_skipped}); "
              "'hilt verify' lists them", file=sys.stderr)
    page = render_html(data, top=args.top)
    temporary = f"{output}.tmp{os.getpid()}"
    try:
        with open(temporary, "w", encoding="utf-8") as out:
            out.write(page)
        os.replace(temporary, output)
    except OSError as exc:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise CLIError(f"{output}: cannot write: {exc.strerror or exc}", status=1) from None
    summary = data.summary()
    print(f"hilt report: wrote {output} ({len(page.encode()) / 1e6:.1f} MB): {summary['calls']} calls, "
          f"{summary['errors']} errors, ${_cost(summary['cost_usd'])}, {len(data.conversations)} conversations")
    return 0
