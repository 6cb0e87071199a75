"""Tools for testing instrumented code offline: an OpenAI-compatible server and an event capture."""

from __future__ import annotations

from .capture import EventCapture, capture_events
from .server import OpenAIServer, RecordedRequest, ScriptedReply

__all__ = ["EventCapture", "OpenAIServer", "RecordedRequest", "ScriptedReply", "capture_events"]
