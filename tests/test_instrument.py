"""instrument() / uninstrument() / get_context(): handlers, logger state, sessions, providers and bad input."""

from __future__ import annotations

import logging
import os
import stat

import pytest

import hilt
from hilt import Event, HILTError, Session
from hilt.config import settings
from hilt.instrumentation import DEFAULT_FILEPATH, get_context

HILT_LOGGER = logging.getLogger("hilt")


def fds_open_on(path) -> int:
    """How many of this process's file descriptors point at ``path``."""
    target = os.path.realpath(path)
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}") == target:
                count += 1
        except OSError:
            pass
    return count


def texts(lines) -> list[str]:
    return [line["content"]["text"] for line in lines]


def note(text: str) -> Event:
    return Event(action="feedback", content={"text": text})


def test_instrument_returns_active_session_and_writes(tmp_log, read_jsonl):
    """instrument(filepath=...) returns the active Session; emitted events go to its file."""
    assert get_context().session is None and get_context().is_instrumented is False
    session = hilt.instrument(filepath=tmp_log, providers=[])
    assert isinstance(session, Session) and session.path == os.fspath(tmp_log)
    assert get_context().session is session
    assert get_context().is_instrumented is True
    hilt.emit(note("one"))
    session.append(note("two"))
    assert texts(read_jsonl(tmp_log)) == ["one", "two"]
    hilt.uninstrument()
    assert get_context().session is None and get_context().is_instrumented is False


def test_default_filepath_is_logs_hilt_jsonl(tmp_path, monkeypatch, read_jsonl):
    """With no destination, backend 'local' writes logs/hilt.jsonl under the working directory."""
    monkeypatch.chdir(tmp_path)
    hilt.instrument(backend="local", providers=[])
    hilt.emit(note("default"))
    assert DEFAULT_FILEPATH == "logs/hilt.jsonl"
    assert texts(read_jsonl(tmp_path / "logs" / "hilt.jsonl")) == ["default"]


def test_second_instrument_closes_first_session(tmp_path, read_jsonl):
    """A second instrument() closes the first session's file and sends later events only to the new one."""
    first_log, second_log = tmp_path / "first.jsonl", tmp_path / "second.jsonl"
    first = hilt.instrument(filepath=first_log, providers=[])
    hilt.emit(note("to first"))
    assert fds_open_on(first_log) == 1
    second = hilt.instrument(filepath=second_log, providers=[])
    hilt.emit(note("to second"))
    assert fds_open_on(first_log) == 0
    assert first.attached is False and second.attached is True
    assert get_context().session is second
    assert texts(read_jsonl(first_log)) == ["to first"]
    assert texts(read_jsonl(second_log)) == ["to second"]
    assert [h for h in HILT_LOGGER.handlers if isinstance(h, hilt.HiltJSONLHandler)] == [second.handler]


def test_uninstrument_restores_logger_exactly_and_is_idempotent(tmp_log):
    """uninstrument() leaves the 'hilt' logger's handlers, level, propagate and disabled as instrument() found them."""
    own = logging.StreamHandler()
    HILT_LOGGER.addHandler(own)
    HILT_LOGGER.setLevel(logging.ERROR)
    HILT_LOGGER.propagate = True
    HILT_LOGGER.disabled = True
    before = (list(HILT_LOGGER.handlers), HILT_LOGGER.level, HILT_LOGGER.propagate, HILT_LOGGER.disabled)
    hilt.instrument(filepath=tmp_log, providers=[], audit=True, propagate=False)
    assert len(HILT_LOGGER.handlers) == len(before[0]) + 2
    assert (HILT_LOGGER.level, HILT_LOGGER.propagate, HILT_LOGGER.disabled) == (logging.INFO, False, False)
    hilt.uninstrument()
    after = (list(HILT_LOGGER.handlers), HILT_LOGGER.level, HILT_LOGGER.propagate, HILT_LOGGER.disabled)
    assert after == before
    hilt.uninstrument()
    assert (list(HILT_LOGGER.handlers), HILT_LOGGER.level, HILT_LOGGER.propagate, HILT_LOGGER.disabled) == before
    assert fds_open_on(tmp_log) == 0


def test_uninstrument_keeps_lower_level_and_resets_settings(tmp_log):
    """A level below INFO is kept by instrument(); capture settings are set by instrument() and reset by uninstrument()."""
    HILT_LOGGER.setLevel(logging.DEBUG)
    redact = str.upper
    hilt.instrument(filepath=tmp_log, providers=[], capture_content=False, redact=redact, max_content_chars=10)
    assert HILT_LOGGER.level == logging.DEBUG
    assert (settings.capture_content, settings.redact, settings.max_content_chars) == (False, redact, 10)
    hilt.uninstrument()
    assert HILT_LOGGER.level == logging.DEBUG
    assert (settings.capture_content, settings.redact, settings.max_content_chars) == (True, None, None)


def openai_surface() -> dict[tuple[str, str], object]:
    """Every attribute defined on the OpenAI SDK classes a provider patch could touch."""
    openai = pytest.importorskip("openai")
    from openai import _base_client
    from openai.resources import completions, embeddings
    from openai.resources.chat import completions as chat_completions

    classes = [
        openai.OpenAI, openai.AsyncOpenAI, openai.AzureOpenAI, _base_client.SyncAPIClient, _base_client.AsyncAPIClient,
        chat_completions.Completions, chat_completions.AsyncCompletions, completions.Completions,
        embeddings.Embeddings, embeddings.AsyncEmbeddings,
    ]
    try:
        from openai.resources import responses

        classes += [responses.Responses, responses.AsyncResponses]
    except ImportError:
        pass
    return {(cls.__qualname__, name): value for cls in classes for name, value in vars(cls).items()}


def test_providers_empty_opens_session_without_patching(hilt_records):
    """instrument(providers=[]) opens a file-less session, adds no handler and patches no SDK method."""
    before_surface = openai_surface()
    before_handlers = list(HILT_LOGGER.handlers)
    session = hilt.instrument(providers=[])
    assert session.path is None and session.handler is None
    assert get_context().session is session and get_context().is_instrumented
    assert HILT_LOGGER.handlers == before_handlers
    assert openai_surface() == before_surface
    event = session.append(note("only to logger handlers"))
    assert [r.hilt_event for r in hilt_records] == [event]


def test_providers_openai_does_not_fail(tmp_log, read_jsonl):
    """instrument(providers=['openai']) succeeds, records manual events, and uninstrument() restores the SDK."""
    before_surface = openai_surface()
    session = hilt.instrument(filepath=tmp_log, providers=["openai"])
    session.append(note("with openai"))
    hilt.uninstrument()
    assert openai_surface() == before_surface
    assert texts(read_jsonl(tmp_log)) == ["with openai"]


@pytest.mark.parametrize("providers", [["nope"], "openai", ["openai", "nope"]])
def test_unknown_providers_raise(tmp_log, providers):
    """An unknown provider name, or a string instead of a list, raises HILTError naming `providers`."""
    with pytest.raises(HILTError, match=r"^providers:"):
        hilt.instrument(filepath=tmp_log, providers=providers)
    assert not get_context().is_instrumented
    assert not tmp_log.exists()


def test_propagate_true_reaches_root_handlers(tmp_log, root_records):
    """instrument(propagate=True) sends event records to root handlers too; uninstrument() stops it."""
    hilt.instrument(filepath=tmp_log, providers=[])
    hilt.emit(note("private"))
    assert [r for r in root_records if r.name == "hilt"] == []
    hilt.instrument(filepath=tmp_log, providers=[], propagate=True)
    shared = note("shared")
    hilt.emit(shared)
    assert [r.hilt_event for r in root_records if r.name == "hilt"] == [shared]
    hilt.uninstrument()
    assert HILT_LOGGER.propagate is False
    hilt.emit(note("after"))
    assert len([r for r in root_records if r.name == "hilt"]) == 1


def test_use_session_plain_call_routes_events(tmp_path, read_jsonl):
    """get_context().use_session(other) as a plain call sends this thread's events to other, not the instrumented file."""
    main_log, other_log = tmp_path / "main.jsonl", tmp_path / "other.jsonl"
    main = hilt.instrument(filepath=main_log, providers=[])
    other = Session(other_log)
    get_context().use_session(other)
    assert get_context().session is other
    hilt.emit(note("routed"))
    hilt.audit_log("data_export", rows=1)
    get_context().use_session(None)
    assert get_context().session is main
    hilt.emit(note("main again"))
    assert [line["action"] for line in read_jsonl(other_log)] == ["feedback", "audit"]
    assert texts(read_jsonl(main_log)) == ["main again"]


def test_use_session_with_block_routes_then_restores(tmp_path, read_jsonl):
    """`with get_context().use_session(other):` routes events to other inside the block only."""
    main_log, other_log = tmp_path / "main.jsonl", tmp_path / "other.jsonl"
    main = hilt.instrument(filepath=main_log, providers=[])
    other = Session(other_log)
    with get_context().use_session(other) as active:
        assert active is other and get_context().session is other
        hilt.emit(note("inside"))
    assert get_context().session is main
    hilt.emit(note("outside"))
    assert texts(read_jsonl(other_log)) == ["inside"]
    assert texts(read_jsonl(main_log)) == ["outside"]


# --- bad input ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"backend": "nope"}, "backend"),
        ({"filepath": "x.jsonl", "sheet_id": "abc"}, "filepath and sheet_id"),
        ({"backend": "local", "sheet_id": "abc"}, "sheet_id"),
        ({"backend": "sheets", "filepath": "x.jsonl"}, "filepath"),
        ({"filepath": "x.jsonl", "columns": ["nope"]}, "columns"),
        ({"filepath": "x.jsonl", "columns": "timestamp"}, "columns"),
        ({"filepath": "x.jsonl", "redact": "yes"}, "redact"),
        ({"filepath": "x.jsonl", "capture_content": "no"}, "capture_content"),
        ({"filepath": "x.jsonl", "capture_content": None}, "capture_content"),
        ({"filepath": "x.jsonl", "audit": "yes"}, "audit"),
        ({"filepath": "x.jsonl", "propagate": 1}, "propagate"),
        ({"filepath": "x.jsonl", "max_content_chars": 0}, "max_content_chars"),
        ({"filepath": "x.jsonl", "stream_usage": "yes"}, "stream_usage"),
        ({"filepath": "x.jsonl", "max_bytes": 1000}, "backup_count"),
    ],
)
def test_bad_arguments_raise_naming_argument(tmp_path, monkeypatch, kwargs, argument):
    """Each bad instrument() argument raises HILTError (a ValueError) starting with the argument's name; nothing is opened."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(HILTError, match=rf"^{argument}:") as info:
        hilt.instrument(providers=[], **kwargs)
    assert isinstance(info.value, ValueError)
    assert not get_context().is_instrumented
    assert list(tmp_path.iterdir()) == []


def test_directory_as_filepath_raises_naming_filepath(tmp_path):
    """instrument(filepath=<a directory>) raises HILTError naming `filepath`."""
    with pytest.raises(HILTError, match=r"^filepath:.*is a directory"):
        hilt.instrument(filepath=tmp_path, providers=[])


def test_filepath_under_regular_file_raises_naming_filepath(tmp_path):
    """instrument(filepath=<file>/sub/app.jsonl) raises HILTError naming `filepath` and 'is not a folder'."""
    regular = tmp_path / "plain.txt"
    regular.write_text("")
    with pytest.raises(HILTError, match=r"^filepath:.*is not a folder"):
        hilt.instrument(filepath=regular / "sub" / "app.jsonl", providers=[])


@pytest.mark.skipif(os.geteuid() == 0, reason="root bypasses folder permissions")
def test_unwritable_folder_raises_naming_filepath(tmp_path):
    """instrument(filepath=<in a 0500 folder>) raises HILTError naming `filepath`."""
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(HILTError, match=r"^filepath:.*not writable"):
            hilt.instrument(filepath=folder / "app.jsonl", providers=[])
    finally:
        folder.chmod(0o700)


def test_failed_instrument_keeps_previous_session(tmp_path, read_jsonl):
    """A second instrument() with a bad filepath raises and leaves the first session active and writing."""
    good = tmp_path / "good.jsonl"
    session = hilt.instrument(filepath=good, providers=[])
    with pytest.raises(HILTError):
        hilt.instrument(filepath=tmp_path, providers=[])
    with pytest.raises(HILTError):
        hilt.instrument(filepath=good, providers=["nope"])
    assert get_context().session is session
    hilt.emit(note("still here"))
    assert texts(read_jsonl(good)) == ["still here"]
    assert stat.S_IMODE(good.stat().st_mode) == 0o600
