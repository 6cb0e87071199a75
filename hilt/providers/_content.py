"""Provider-agnostic shaping of recorded content: JSON-safe copies, base64 size markers, redaction, size caps."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..config import settings

__all__ = ["base64_marker", "json_safe", "limit_text", "prepare_structure", "prepare_text"]

_DATA_URL_PREFIX = "data:"
_BASE64_TAG = ";base64,"
# Keys whose value is bare base64 (no data: URL) in OpenAI payloads, with the media type to name.
# Keys whose string values are what people said (redacted and capped); roles, names and ids are left as they are.
_TEXT_KEYS = frozenset({"content", "text", "arguments", "refusal", "input", "instructions", "output", "prompt"})
_BARE_BASE64_KEYS = {"data": "audio", "file_data": "application/octet-stream", "b64_json": "image"}


def _decoded_size(encoded: str) -> int:
    """Bytes a base64 string decodes to, computed from its length (no decoding)."""
    length = len(encoded.strip())
    padding = len(encoded) - len(encoded.rstrip("="))
    return max(0, length * 3 // 4 - padding)


def base64_marker(media_type: str, encoded: str) -> str:
    """The marker that replaces inline base64: ``<image/png base64, 48000 bytes>`` (the decoded size)."""
    return f"<{media_type} base64, {_decoded_size(encoded)} bytes>"


def _replace_data_url(value: str) -> str:
    header, _, encoded = value.partition(_BASE64_TAG)
    return base64_marker(header[len(_DATA_URL_PREFIX):] or "application/octet-stream", encoded)


def json_safe(value: Any) -> Any:
    """A JSON-ready copy of request/response data (SDK models dumped, tuples as lists, bytes as size markers)."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, Mapping):
        return {str(key): json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    if isinstance(value, (bytes, bytearray)):
        return f"<{len(value)} bytes>"
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        try:
            return json_safe(dump(mode="json", exclude_unset=True))
        except Exception:
            pass
    return repr(value)


def limit_text(text: str) -> str:
    """Apply the redaction hook and the size cap to one recorded text."""
    redact = settings.redact
    if redact is not None:
        text = redact(text)
        if not isinstance(text, str):
            raise TypeError(f"redact must return a string, returned {type(text).__name__}")
    cap = settings.max_content_chars
    if cap is not None and len(text) > cap:
        text = f"{text[:cap]}…[truncated {len(text) - cap} chars]"
    return text


def prepare_text(text: Any) -> str | None:
    """A text ready to record: ``None`` when content capture is off, else redacted and capped."""
    if text is None or not settings.capture_content:
        return None
    if not isinstance(text, str):
        text = str(text)
    if settings.redact is None and settings.max_content_chars is None:
        return text
    return limit_text(text)


def prepare_structure(value: Any, key: str | None = None) -> Any:
    """Messages, tools or tool calls ready to record: base64 replaced by markers, texts redacted/capped.

    One pass that also makes the value JSON-ready (SDK models dumped). Returns ``None`` when
    content capture is off.
    """
    if value is None or not settings.capture_content:
        return None
    transform = settings.redact is not None or settings.max_content_chars is not None
    return _walk(value, key, transform)


def _walk(value: Any, key: str | None, transform: bool) -> Any:
    kind = value.__class__
    if kind is str:
        if value.startswith(_DATA_URL_PREFIX) and _BASE64_TAG in value[:200]:
            return _replace_data_url(value)
        if key in _BARE_BASE64_KEYS and len(value) > 256:
            return base64_marker(_BARE_BASE64_KEYS[key], value)
        return limit_text(value) if transform and key in _TEXT_KEYS else value
    if kind is dict:
        if key == "input_audio" and isinstance(value.get("data"), str):
            media = f"audio/{value.get('format') or 'unknown'}"
            return {
                k: base64_marker(media, v) if k == "data" else _walk(v, k, transform) for k, v in value.items()
            }
        return {k if k.__class__ is str else str(k): _walk(v, k, transform) for k, v in value.items()}
    if kind is list or kind is tuple:
        return [_walk(item, key, transform) for item in value]
    if value is None or kind is int or kind is float or kind is bool:
        return value
    if isinstance(value, str):
        return _walk(str(value), key, transform)
    if isinstance(value, (Mapping, list, tuple)) or hasattr(value, "model_dump"):
        return _walk(json_safe(value), key, transform)
    return json_safe(value)
