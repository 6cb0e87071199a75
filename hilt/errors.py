"""The one exception type hilt raises into user code: bad configuration and strict reads."""

from __future__ import annotations

__all__ = ["HILTError"]


class HILTError(ValueError):
    """Bad configuration or an unreadable log line; the message names the argument (or ``path:line``) and the fix."""
