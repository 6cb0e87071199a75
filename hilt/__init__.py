"""hilt: a private, complete audit trail of every LLM call, in one line of code.

    import hilt
    hilt.instrument(filepath="logs/app.jsonl")

Every call through the OpenAI SDK is then written as JSON lines (prompt, completion, tokens, cost,
latency, status, conversation links). Events are records on the ``hilt`` logger; every destination
is a ``logging.Handler``.
"""

from __future__ import annotations

from . import redactors
from ._emit import audit_log, emit, flush
from .audit import AuditEvent, register_audit_callback, unregister_audit_callback
from .context import conversation, get_context, track_costs
from .errors import HILTError
from .events import Actor, Content, Event, Metrics
from .handlers import HiltAuditHandler, HiltJSONLHandler, HiltQueueHandler, HiltSheetsHandler
from .instrumentation import instrument, uninstrument
from .session import Session

__version__ = "0.1.0"

__all__ = [
    "Actor",
    "AuditEvent",
    "Content",
    "Event",
    "HILTError",
    "HiltAuditHandler",
    "HiltJSONLHandler",
    "HiltQueueHandler",
    "HiltSheetsHandler",
    "Metrics",
    "Session",
    "__version__",
    "audit_log",
    "conversation",
    "emit",
    "flush",
    "get_context",
    "instrument",
    "redactors",
    "register_audit_callback",
    "track_costs",
    "uninstrument",
    "unregister_audit_callback",
]
