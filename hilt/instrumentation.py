"""``instrument()`` / ``uninstrument()``: attach hilt's handlers to the ``hilt`` logger and patch provider SDKs."""

from __future__ import annotations

import atexit
import logging
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from . import _recorder
from . import providers as provider_registry
from ._emit import logger
from ._internal import log_repeat_counts, report_failure
from .audit import wait_for_callbacks
from .columns import validate_columns
from .config import settings
from .context import get_context
from .errors import HILTError
from .handlers.audit import HiltAuditHandler
from .session import Session

__all__ = ["DEFAULT_FILEPATH", "active_session", "get_context", "instrument", "is_instrumented", "uninstrument"]

DEFAULT_FILEPATH = "logs/hilt.jsonl"
BACKENDS = ("local", "sheets")
_TRUE = ("1", "true", "yes", "on")


@dataclass
class _State:
    session: Session
    handlers: list[logging.Handler] = field(default_factory=list)
    providers: list[str] = field(default_factory=list)
    logger_level: int = logging.NOTSET
    logger_propagate: bool = False
    logger_disabled: bool = False
    pricing_set: bool = False


_lock = threading.RLock()
_state: _State | None = None


def is_instrumented() -> bool:
    """True between ``instrument()`` and ``uninstrument()``."""
    return _state is not None


def active_session() -> Session | None:
    """The session the last ``instrument()`` returned, while it is active."""
    state = _state
    return state.session if state is not None else None


def _audit_from_env() -> bool:
    return os.environ.get("HILT_AUDIT", "").strip().lower() in _TRUE


def _check_options(
    capture_content: Any, redact: Any, max_content_chars: Any, stream_usage: Any, audit: Any, propagate: Any
) -> None:
    for name, value in (("capture_content", capture_content), ("stream_usage", stream_usage)):
        if not isinstance(value, bool):
            raise HILTError(f"{name}: expected True or False, got {value!r}")
    for name, value in (("audit", audit), ("propagate", propagate)):
        if value is not None and not isinstance(value, bool):
            raise HILTError(f"{name}: expected True, False or None, got {value!r}")
    if redact is not None and not callable(redact):
        raise HILTError(f"redact: expected a function taking and returning a string, got {redact!r}")
    if max_content_chars is not None and (
        isinstance(max_content_chars, bool) or not isinstance(max_content_chars, int) or max_content_chars < 1
    ):
        raise HILTError(f"max_content_chars: expected a positive number of characters or None, got {max_content_chars!r}")


def _choose_backend(backend: str | None, filepath: Any, sheet_id: Any, providers: Any) -> str | None:
    """'local', 'sheets' or None (patch only: handlers come from ``dictConfig``)."""
    if backend is not None and backend not in BACKENDS:
        raise HILTError(
            f"backend: unknown backend {backend!r}; use 'local' (a JSONL file, with filepath=) "
            "or 'sheets' (Google Sheets, with sheet_id=), or leave it out to infer it"
        )
    if filepath is not None and sheet_id is not None:
        raise HILTError(
            "filepath and sheet_id: pass one of them (filepath for a JSONL file, sheet_id for Google Sheets); "
            "to write both, add the second as a handler on the 'hilt' logger (see docs/configuration.md)"
        )
    if backend == "local" and sheet_id is not None:
        raise HILTError("sheet_id: backend='local' writes a JSONL file; drop sheet_id or use backend='sheets'")
    if backend == "sheets" and filepath is not None:
        raise HILTError("filepath: backend='sheets' writes to Google Sheets; drop filepath or use backend='local'")
    if backend is not None:
        return backend
    if sheet_id is not None:
        return "sheets"
    if filepath is not None or providers is None:
        return "local"
    return None


def instrument(
    backend: str | None = None,
    filepath: str | os.PathLike[str] | None = None,
    sheet_id: str | None = None,
    credentials_path: str | os.PathLike[str] | None = None,
    credentials_json: str | Mapping[str, Any] | None = None,
    worksheet_name: str = "Logs",
    columns: Sequence[str] | None = None,
    providers: Sequence[str] | None = None,
    audit: bool | None = None,
    *,
    capture_content: bool = True,
    redact: Callable[[str], str] | None = None,
    max_content_chars: int | None = None,
    stream_usage: bool = False,
    pricing: Mapping[str, Mapping[str, float]] | None = None,
    propagate: bool | None = None,
    fsync: bool = False,
    max_bytes: int = 0,
    backup_count: int = 0,
) -> Session:
    """Record every LLM call from now on: attach handlers to the ``hilt`` logger and patch the provider SDKs.

    Patches the OpenAI SDK's request path (``openai.OpenAI``, ``AsyncOpenAI``, ``AzureOpenAI`` and
    OpenAI-compatible servers via ``base_url``) when ``openai`` is installed. A second call replaces
    the first (its session is closed); ``uninstrument()`` undoes everything.

    Args:
        backend: ``"local"`` or ``"sheets"``; inferred from ``filepath`` / ``sheet_id`` when left out.
        filepath: the JSONL file (``{date}`` for daily files). Default ``logs/hilt.jsonl`` when no
            destination and no ``providers`` are given.
        sheet_id, credentials_path, credentials_json, worksheet_name, columns: the Google Sheets backend.
        providers: SDKs to patch (``["openai"]``); ``None`` patches every installed one. Given with no
            destination, hilt only patches, and handlers come from ``logging.config.dictConfig``.
        audit: also print ``[HILT_AUDIT] {...}`` lines on stdout; ``None`` reads ``HILT_AUDIT=1``.
        capture_content: ``False`` records metadata only (no prompt or completion text).
        redact: a function applied to every recorded text before it is written.
        max_content_chars: cut recorded texts longer than this.
        stream_usage: ask streams for usage (adds ``stream_options.include_usage``; changes the chunks).
        pricing: price overrides per model, ``{"my-model": {"input": 1.0, "output": 2.0}}`` USD per 1M tokens.
        propagate: also pass events to the root logger's handlers.
        fsync, max_bytes, backup_count: :class:`HiltJSONLHandler` options for the local file.

    Returns:
        The active :class:`Session`.

    Raises:
        HILTError: a bad argument; nothing is changed then.
    """
    global _state
    _check_options(capture_content, redact, max_content_chars, stream_usage, audit, propagate)
    chosen_backend = _choose_backend(backend, filepath, sheet_id, providers)
    if columns is not None:
        validate_columns(columns)
    provider_names = provider_registry.resolve(providers)
    if pricing is not None:
        _check_pricing(pricing)
    with _lock:
        # Open the new destination before closing the old one: a bad filepath must leave the active session alone.
        try:
            if chosen_backend == "local":
                session = Session(
                    filepath if filepath is not None else DEFAULT_FILEPATH,
                    fsync=fsync, max_bytes=max_bytes, backup_count=backup_count,
                )
            elif chosen_backend == "sheets":
                session = _sheets_session(sheet_id, credentials_path, credentials_json, worksheet_name, columns)
            else:
                session = Session(None)
        except HILTError as exc:
            if str(exc).startswith("filename:"):  # the handler's argument is instrument()'s `filepath`
                raise HILTError("filepath:" + str(exc)[len("filename:"):]) from exc
            raise
        if _state is not None:
            uninstrument()
        if pricing is not None:
            _set_pricing(pricing)
        state = _State(
            pricing_set=pricing is not None,
            session=session,
            logger_level=logger.level,
            logger_propagate=logger.propagate,
            logger_disabled=logger.disabled,
        )
        if session.handler is not None:
            state.handlers.append(session.handler)
        if audit if audit is not None else _audit_from_env():
            state.handlers.append(HiltAuditHandler())
        settings.capture_content = capture_content
        settings.redact = redact
        settings.max_content_chars = max_content_chars
        settings.stream_usage = stream_usage
        for handler in state.handlers:
            logger.addHandler(handler)
        session.attached = session.handler is not None
        if logger.level == logging.NOTSET or logger.level > logging.INFO:
            logger.setLevel(logging.INFO)
        logger.disabled = False
        if propagate is not None:
            logger.propagate = propagate
        for name in provider_names:
            try:
                provider_registry.load(name).instrument()
                state.providers.append(name)
            except Exception as exc:  # a broken SDK install must not stop the app from starting
                report_failure(f"instrument provider {name}", exc)
        _state = state
        return session


def _sheets_session(
    sheet_id: str | None,
    credentials_path: Any,
    credentials_json: Any,
    worksheet_name: str,
    columns: Sequence[str] | None,
) -> Session:
    try:
        from .handlers.sheets import HiltSheetsHandler  # type: ignore[import-not-found]
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.startswith("hilt"):
            raise HILTError("sheet_id: the Google Sheets backend is not part of this hilt version yet") from exc
        raise
    session = Session(None)
    session.handler = HiltSheetsHandler(
        sheet_id=sheet_id,
        credentials_path=credentials_path,
        credentials_json=credentials_json,
        worksheet_name=worksheet_name,
        columns=columns,
    )
    return session


def _check_pricing(pricing: Any) -> None:
    if not isinstance(pricing, Mapping):
        raise HILTError(f"pricing: expected {{model: {{'input': ..., 'output': ...}}}}, got {pricing!r}")
    from .pricing import validate_price_overrides

    try:
        validate_price_overrides(pricing)
    except ValueError as exc:
        raise HILTError(str(exc)) from exc


def _set_pricing(pricing: Mapping[str, Mapping[str, float]] | None) -> None:
    if pricing is not None and not isinstance(pricing, Mapping):
        raise HILTError(f"pricing: expected {{model: {{'input': ..., 'output': ...}}}}, got {pricing!r}")
    from .pricing import set_price_overrides

    try:
        set_price_overrides(pricing)
    except ValueError as exc:
        raise HILTError(str(exc)) from exc


def uninstrument(timeout: float = 5.0) -> None:
    """Undo ``instrument()``: restore every patched SDK method, flush and close what it opened, restore the logger.

    Idempotent. Waits up to ``timeout`` seconds for async callbacks still running in the background.
    """
    global _state
    with _lock:
        state, _state = _state, None
        if state is None:
            return
        for name in reversed(state.providers):
            try:
                provider_registry.load(name).uninstrument()
            except Exception as exc:
                report_failure(f"uninstrument provider {name}", exc)
        _recorder.drain()  # calls recorded in the background reach the handlers before they close
        for handler in state.handlers:
            logger.removeHandler(handler)
            try:
                handler.flush()
                handler.close()
            except Exception as exc:
                report_failure(f"closing {type(handler).__name__}", exc)
        state.session.attached = False
        state.session.close()
        logger.setLevel(state.logger_level)
        logger.propagate = state.logger_propagate
        logger.disabled = state.logger_disabled
        settings.reset()
        if state.pricing_set:
            try:
                _set_pricing(None)
            except Exception as exc:
                report_failure("resetting price overrides", exc)
    wait_for_callbacks(timeout)
    log_repeat_counts()


def _at_exit() -> None:
    """At interpreter exit: finish background callbacks and close what ``instrument()`` opened."""
    try:
        uninstrument(timeout=2.0)
    except Exception:  # exit must go on whatever happens here
        pass


atexit.register(_at_exit)
