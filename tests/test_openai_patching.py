"""Patching: exact restore on uninstrument, idempotent instrument, clients built before, import order,
and never recording a call twice."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import openai
import pytest
from openai._base_client import AsyncAPIClient, SyncAPIClient

import hilt
import hilt.providers.openai as hilt_openai
from hilt import providers
from hilt.errors import HILTError
from hilt.testing import capture_events
from test_openai_support import (  # noqa: F401 - fixtures
    aclient,
    client,
    fresh_server,
    make_client,
    one_call,
    read_events,
    server,
)

MESSAGES = [{"role": "user", "content": "hello patching"}]
PATCHED = [(SyncAPIClient, "request"), (SyncAPIClient, "_process_response"),
           (AsyncAPIClient, "request"), (AsyncAPIClient, "_process_response")]


def _methods() -> list[Any]:
    return [cls.__dict__[name] for cls, name in PATCHED]


def _chat(client: openai.OpenAI) -> Any:
    return client.chat.completions.create(model="gpt-4o", messages=MESSAGES)


def _class_attributes() -> dict[tuple[str, str], Any]:
    return {(cls.__name__, key): value for cls in (SyncAPIClient, AsyncAPIClient) for key, value in vars(cls).items()}


def test_uninstrument_restores_the_identical_functions(tmp_log):
    """instrument() replaces request/_process_response; uninstrument() puts back the very same objects, and only them."""
    originals = _methods()
    everything = _class_attributes()
    hilt.instrument(filepath=tmp_log)
    assert all(patched is not original for patched, original in zip(_methods(), originals))
    assert hilt_openai.is_instrumented()
    hilt.uninstrument()
    assert all(now is original for now, original in zip(_methods(), originals))
    after = _class_attributes()
    assert after.keys() == everything.keys()
    assert all(after[key] is value for key, value in everything.items())
    assert not hilt_openai.is_instrumented()


def test_instrument_twice_records_each_call_once(client, tmp_log):
    """hilt.instrument() twice (and the provider's instrument() again) still writes one prompt per call."""
    originals = _methods()
    hilt.instrument(filepath=tmp_log)
    hilt.instrument(filepath=tmp_log)
    installed = _methods()
    hilt_openai.instrument()
    assert _methods() == installed  # the provider's second instrument() changed nothing
    _chat(client)
    list(client.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True))
    assert [e["action"] for e in read_events(tmp_log)] == ["prompt", "completion"] * 2
    hilt.uninstrument()
    assert all(now is original for now, original in zip(_methods(), originals))


def test_uninstrument_instrument_cycles(client, tmp_log):
    """Three instrument/uninstrument cycles: each instrumented call is recorded once, none in between."""
    originals = _methods()
    for cycle in range(3):
        hilt.instrument(filepath=tmp_log)
        _chat(client)
        hilt.uninstrument()
        _chat(client)
        assert len(read_events(tmp_log)) == 2 * (cycle + 1)
    assert all(now is original for now, original in zip(_methods(), originals))


def test_client_built_before_instrument_is_recorded(server, tmp_log):
    """A client (sync and async) created before instrument() is recorded: the patch is on the base classes."""
    early = make_client(server)
    try:
        hilt.instrument(filepath=tmp_log)
        _chat(early)
    finally:
        early.close()
    prompt, end = one_call(tmp_log)
    assert end["content"]["text"] == "Echo: hello patching"


async def test_async_client_built_before_instrument_is_recorded(aclient, tmp_log):
    """An AsyncOpenAI created before instrument() is recorded."""
    hilt.instrument(filepath=tmp_log)
    await aclient.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert one_call(tmp_log)[1]["extensions"]["status_code"] == 200


def test_nothing_recorded_after_uninstrument(client, tmp_log):
    """After uninstrument() calls (plain and streamed) are no longer recorded and streams are the SDK's own class."""
    hilt.instrument(filepath=tmp_log)
    _chat(client)
    hilt.uninstrument()
    before = tmp_log.read_bytes()
    with capture_events() as events:
        _chat(client)
        stream = client.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True)
        assert type(stream) is openai.Stream
        list(stream)
    assert events == []
    assert tmp_log.read_bytes() == before


def test_instrument_before_importing_openai(server, tmp_path, subprocess_env):
    """In a fresh process, hilt.instrument() before `import openai` still records the calls."""
    log = tmp_path / "order.jsonl"
    script = f"""
import sys
import hilt
hilt.instrument(filepath={str(log)!r})
import openai
client = openai.OpenAI(base_url={server.base_url!r}, api_key="sk-order-0123456789", max_retries=0)
client.chat.completions.create(model="gpt-4o", messages=[{{"role": "user", "content": "late import"}}])
for chunk in client.chat.completions.create(model="gpt-4o", messages=[{{"role": "user", "content": "x"}}], stream=True):
    pass
hilt.uninstrument()
"""
    done = subprocess.run([sys.executable, "-c", script], env=subprocess_env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    events = read_events(log)
    assert [e["action"] for e in events] == ["prompt", "completion"] * 2
    assert events[0]["content"]["text"] == "late import"
    assert events[3]["extensions"]["stream_completed"] is True


def test_client_subclass_calling_super_is_recorded_once(server, tmp_log):
    """A client subclass whose request() calls super().request() is one call, not two."""

    class TracingClient(openai.OpenAI):
        def request(self, *args: Any, **kwargs: Any) -> Any:
            return super().request(*args, **kwargs)

    hilt.instrument(filepath=tmp_log)
    with TracingClient(base_url=server.base_url, api_key="sk-sub-0123456789", max_retries=0) as client:
        _chat(client)
        client.with_options(timeout=5).chat.completions.create(model="gpt-4o", messages=MESSAGES)
    events = read_events(tmp_log)
    assert [e["action"] for e in events] == ["prompt", "completion"] * 2


# Another library patching request() on top of hilt's: run in a child process, so that whatever hilt keeps
# about its patches cannot leak into the other tests.
OTHER_LIBRARY_SCRIPT = """
import functools, json, sys
import openai, hilt
from openai._base_client import SyncAPIClient
from hilt.testing import capture_events

base_url, use_wraps = sys.argv[1], sys.argv[2] == "wraps"
hilt.instrument(providers=["openai"])
beneath = SyncAPIClient.request
seen = []

def other_library(self, *args, **kwargs):
    seen.append(1)
    return beneath(self, *args, **kwargs)

if use_wraps:
    other_library = functools.wraps(beneath)(other_library)
SyncAPIClient.request = other_library
hilt.uninstrument()
still_installed = SyncAPIClient.__dict__["request"] is other_library
client = openai.OpenAI(base_url=base_url, api_key="sk-other-0123456789", max_retries=0)
with capture_events() as events:
    client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
print(json.dumps({"still_installed": still_installed, "other_called": len(seen),
                  "recorded_after_uninstrument": [e.action for e in events]}))
"""


def _other_library_scenario(server: Any, variant: str, env: dict[str, str]) -> dict[str, Any]:
    done = subprocess.run([sys.executable, "-c", OTHER_LIBRARY_SCRIPT, server.base_url, variant], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_uninstrument_keeps_another_librarys_wraps_patch(server, subprocess_env):
    """A patch another library puts on top of hilt's (with functools.wraps) survives hilt.uninstrument()."""
    result = _other_library_scenario(server, "wraps", subprocess_env)
    assert result["still_installed"] is True
    assert result["other_called"] == 1


def test_nothing_recorded_after_uninstrument_under_another_patch(server, subprocess_env):
    """With another library's plain patch on top of hilt's, its patch stays and calls after uninstrument() are not recorded."""
    result = _other_library_scenario(server, "plain", subprocess_env)
    assert result["still_installed"] is True
    assert result["other_called"] == 1
    assert result["recorded_after_uninstrument"] == []


def test_providers_without_openai_records_no_calls(client, tmp_log):
    """instrument(providers=[]) leaves the SDK alone: no OpenAI call is recorded and nothing is patched."""
    originals = _methods()
    hilt.instrument(filepath=tmp_log, providers=[])
    assert all(now is original for now, original in zip(_methods(), originals))
    _chat(client)
    assert read_events(tmp_log) == []


# --- SDKs hilt can't record -------------------------------------------------------------------------------


@pytest.fixture
def sdk_below_the_floor(monkeypatch):
    """The installed SDK made "older than the oldest release hilt records" by raising hilt's floor above it."""
    module, sdk, package, _oldest = providers.KNOWN_PROVIDERS["openai"]
    monkeypatch.setitem(providers.KNOWN_PROVIDERS, "openai", (module, sdk, package, "99.0"))
    return openai.__version__


def test_named_sdk_older_than_the_floor_raises_with_the_upgrade(sdk_below_the_floor, tmp_log):
    """providers=["openai"] with an SDK older than hilt records: HILTError naming the argument, both versions
    and the fix, raised before anything changes (no file, no patch)."""
    originals = _methods()
    expected = (f"providers: 'openai' needs openai>=99.0, and openai {sdk_below_the_floor} is installed; "
                "upgrade it with: pip install -U 'openai>=99.0'")
    with pytest.raises(HILTError) as raised:
        hilt.instrument(filepath=tmp_log, providers=["openai"])
    assert str(raised.value) == expected
    assert _methods() == originals and not tmp_log.exists()


def test_found_sdk_older_than_the_floor_is_left_alone_and_reported(sdk_below_the_floor, client, tmp_log,
                                                                   internal_reports):
    """With providers left to hilt, an SDK older than the floor is not patched (its calls go on as without hilt)
    and a warning on hilt.internal says its calls are not recorded and how to upgrade."""
    originals = _methods()
    hilt.instrument(filepath=tmp_log)
    assert _methods() == originals
    assert _chat(client).choices[0].message.content
    assert read_events(tmp_log) == []
    messages = [record.getMessage() for record in internal_reports()]
    assert f"hilt: openai {sdk_below_the_floor} is older than 99.0, the oldest release hilt records: its calls are " \
           "not recorded; upgrade it with: pip install -U 'openai>=99.0'" in messages


def test_sdk_without_a_patch_point_is_left_whole(monkeypatch, client, tmp_log, internal_reports):
    """An SDK laid out otherwise (one of the methods hilt wraps is missing) is not half patched: nothing is, the
    call goes on as without hilt, and hilt.internal names what is missing."""
    targets = hilt_openai._targets()
    monkeypatch.setattr(hilt_openai, "_targets", lambda: [*targets, (SyncAPIClient, "_gone_in_this_release", None)])
    originals, before = _methods(), _class_attributes()
    hilt.instrument(filepath=tmp_log)
    assert _methods() == originals and _class_attributes() == before
    assert _chat(client).choices[0].message.content
    assert read_events(tmp_log) == []
    assert any("has no SyncAPIClient._gone_in_this_release to patch; nothing was patched" in record.getMessage()
               for record in internal_reports())
    hilt.uninstrument()
    monkeypatch.undo()
    hilt.instrument(filepath=tmp_log)  # the same SDK, whole: recorded as usual
    _chat(client)
    assert [event["action"] for event in read_events(tmp_log)] == ["prompt", "completion"]


def test_the_oldest_release_hilt_records_is_one_number():
    """The floor in the provider table is the one pip enforces (``hilt[openai]``, the dev extra) and the release
    ``make test-older-sdks`` runs these tests on, so what hilt accepts is what CI has tested."""
    floor = providers.KNOWN_PROVIDERS["openai"][3]
    root = Path(hilt.__file__).resolve().parent.parent
    assert re.findall(r'"openai>=([^"]+)"', (root / "pyproject.toml").read_text()) == [floor, floor]
    assert re.search(r"^OLDER_OPENAI := (\S+)", (root / "Makefile").read_text(), re.MULTILINE).group(1) == floor
    assert "make test-older-sdks" in (root / ".ci" / "run").read_text()
