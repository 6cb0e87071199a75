"""``logging.Handler`` classes that store or forward hilt events."""

from __future__ import annotations

from .audit import HiltAuditHandler
from .jsonl import HiltJSONLHandler
from .queue import HiltQueueHandler
from .sheets import HiltSheetsHandler

__all__ = ["HiltAuditHandler", "HiltJSONLHandler", "HiltQueueHandler", "HiltSheetsHandler"]
