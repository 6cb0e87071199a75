"""Process-wide capture settings that ``instrument()`` sets and providers read on each call."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Settings", "settings"]


@dataclass
class Settings:
    """What providers record: content on/off, a redaction hook, a size cap, stream usage opt-in."""

    capture_content: bool = True
    redact: Callable[[str], str] | None = None
    max_content_chars: int | None = None
    stream_usage: bool = False

    def reset(self) -> None:
        defaults = Settings()
        self.__dict__.update(defaults.__dict__)


settings = Settings()
