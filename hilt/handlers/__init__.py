"""``logging.Handler`` classes that store or forward hilt events."""

from __future__ import annotations

from .audit import HiltAuditHandler
from .jsonl import HiltJSONLHandler

__all__ = ["HiltAuditHandler", "HiltJSONLHandler"]
