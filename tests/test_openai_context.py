"""Context: conversation ids, conversation() tags and track_costs() across nesting, threads and tasks."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import threading

import openai
import pytest

import hilt
from hilt.context import ConversationTags, conversation_id_for
from hilt.pricing import cost_usd
from hilt.testing import ScriptedReply
from test_openai_support import (  # noqa: F401 - fixtures
    REFUSED_URL,
    aclient,
    calls,
    check_pair,
    client,
    closing_events,
    fresh_server,
    make_async_client,
    make_client,
    one_call,
    read_events,
    server,
)

OPENING = [
    {"role": "system", "content": "You are a travel agent."},
    {"role": "user", "content": "Plan a trip to Rome."},
]
TURN_TWO = OPENING + [
    {"role": "assistant", "content": "Echo: Plan a trip to Rome."},
    {"role": "user", "content": "Make it three days."},
]


# --- conversation ids -----------------------------------------------------------------------------------


def test_turns_of_one_conversation_share_the_id(client, tmp_log):
    """The second turn resends the opening: both calls (all four events) share one session_id."""
    hilt.instrument(filepath=tmp_log)
    client.chat.completions.create(model="gpt-4o", messages=OPENING)
    client.chat.completions.create(model="gpt-4o", messages=TURN_TWO)
    events = read_events(tmp_log)
    assert len(events) == 4
    assert len({e["session_id"] for e in events}) == 1
    assert re.fullmatch(r"conv_[0-9a-f]{16}", events[0]["session_id"])


def test_different_openings_differ(client, tmp_log):
    """A different system prompt or first user message gives a different session_id."""
    hilt.instrument(filepath=tmp_log)
    client.chat.completions.create(model="gpt-4o", messages=OPENING)
    client.chat.completions.create(model="gpt-4o", messages=[OPENING[0], {"role": "user", "content": "Paris then."}])
    client.chat.completions.create(model="gpt-4o", messages=[{"role": "system", "content": "Other."}, OPENING[1]])
    ids = [e["session_id"] for e in read_events(tmp_log) if e["action"] == "prompt"]
    assert len(set(ids)) == 3


def test_id_follows_the_documented_rule(client, tmp_log):
    """session_id == conversation_id_for("openai", messages) == "conv_" + sha256(...)[:16] over the opening."""
    hilt.instrument(filepath=tmp_log)
    client.chat.completions.create(model="gpt-4o", messages=TURN_TWO)
    prompt, end = one_call(tmp_log)
    assert prompt["session_id"] == conversation_id_for("openai", TURN_TWO)
    assert prompt["session_id"] == conversation_id_for("openai", OPENING)
    assert prompt["session_id"] != conversation_id_for("azure", OPENING)


def test_id_is_stable_across_processes(client, tmp_log, server, subprocess_env):
    """Another Python process (another hash seed) recording the same opening writes the same session_id."""
    hilt.instrument(filepath=tmp_log)
    client.chat.completions.create(model="gpt-4o", messages=OPENING)
    here = one_call(tmp_log)[0]["session_id"]
    child_log = tmp_log.parent / "child.jsonl"
    script = f"""
import json, openai, hilt
hilt.instrument(filepath={str(child_log)!r})
client = openai.OpenAI(base_url={server.base_url!r}, api_key="sk-child-0123456789", max_retries=0)
client.chat.completions.create(model="gpt-4o", messages={json.dumps(TURN_TWO)})
hilt.uninstrument()
"""
    env = dict(subprocess_env, PYTHONHASHSEED="12345")
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    child_events = read_events(child_log)
    assert [e["action"] for e in child_events] == ["prompt", "completion"]
    assert {e["session_id"] for e in child_events} == {here}


def test_conversation_id_overrides(client, server, tmp_log):
    """conversation(id="c1") sets session_id on the prompt, completion and error events."""
    hilt.instrument(filepath=tmp_log)
    with hilt.conversation(id="c1"):
        client.chat.completions.create(model="gpt-4o", messages=OPENING)
        server.enqueue(ScriptedReply.error(500))
        with pytest.raises(openai.InternalServerError):
            client.chat.completions.create(model="gpt-4o", messages=TURN_TWO)
    client.chat.completions.create(model="gpt-4o", messages=OPENING)
    events = read_events(tmp_log)
    assert [e["session_id"] for e in events[:4]] == ["c1"] * 4
    assert events[4]["session_id"] == conversation_id_for("openai", OPENING)


def test_conversation_tags_on_every_event(client, server, tmp_log):
    """user_id, tenant and metadata from conversation() are in extensions of prompt, completion and error."""
    hilt.instrument(filepath=tmp_log)
    with hilt.conversation(user_id="u-7", tenant="acme", metadata={"plan": "pro"}):
        client.chat.completions.create(model="gpt-4o", messages=OPENING)
        server.enqueue(ScriptedReply.error(429))
        with pytest.raises(openai.RateLimitError):
            client.chat.completions.create(model="gpt-4o", messages=OPENING)
    events = read_events(tmp_log)
    assert [e["action"] for e in events] == ["prompt", "completion", "prompt", "system"]
    for event in events:
        ext = event["extensions"]
        assert (ext["user_id"], ext["tenant"], ext["metadata"]) == ("u-7", "acme", {"plan": "pro"})
    assert events[0]["actor"] == {"type": "human", "id": "u-7"}
    tags = ConversationTags(user_id="u-7", tenant="acme")
    assert events[0]["session_id"] == conversation_id_for("openai", OPENING, tags)
    assert events[0]["session_id"] != conversation_id_for("openai", OPENING)


def test_no_tags_outside_conversation(client, tmp_log):
    """Outside conversation() there are no user_id/tenant/metadata keys."""
    hilt.instrument(filepath=tmp_log)
    client.chat.completions.create(model="gpt-4o", messages=OPENING)
    for event in read_events(tmp_log):
        assert not {"user_id", "tenant", "metadata"} & set(event["extensions"])


async def test_stream_ending_after_the_block_keeps_its_tags(aclient, tmp_log):
    """A stream started in conversation() and read after the block still carries that conversation."""
    hilt.instrument(filepath=tmp_log)
    with hilt.conversation(id="c-stream", user_id="u-9"):
        stream = await aclient.chat.completions.create(model="gpt-4o", messages=OPENING, stream=True)
    async for _chunk in stream:
        pass
    prompt, end = one_call(tmp_log)
    assert end["session_id"] == "c-stream"
    assert end["extensions"]["user_id"] == "u-9"


# --- track_costs -------------------------------------------------------------------------------------------


def _sums(events):
    ends = [e for e in closing_events(events) if e["action"] == "completion"]
    return (
        sum(e["metrics"]["tokens"]["prompt"] or 0 for e in ends),
        sum(e["metrics"]["tokens"]["completion"] or 0 for e in ends),
        sum(e["metrics"]["tokens"]["total"] or 0 for e in ends),
        sum(e["metrics"]["cost_usd"] or 0 for e in ends),
    )


def test_track_costs_counts_calls_errors_tokens_and_cost(client, server, tmp_log):
    """calls counts every started call (failed ones too), errors the failed ones; tokens and cost sum completions."""
    hilt.instrument(filepath=tmp_log)
    with hilt.track_costs() as costs:
        client.chat.completions.create(model="gpt-4o", messages=OPENING)
        list(client.chat.completions.create(model="gpt-4o", messages=TURN_TWO, stream=True,
                                            stream_options={"include_usage": True}))
        server.enqueue(ScriptedReply.error(429))
        with pytest.raises(openai.RateLimitError):
            client.chat.completions.create(model="gpt-4o", messages=OPENING)
        with make_client(server, base_url=REFUSED_URL) as refused, pytest.raises(openai.APIConnectionError):
            refused.chat.completions.create(model="gpt-4o", messages=OPENING)
        client.embeddings.create(model="text-embedding-3-small", input="three more words")
    client.chat.completions.create(model="gpt-4o", messages=OPENING)  # outside: not counted
    events = read_events(tmp_log)
    assert costs.calls == 5
    assert costs.errors == 2
    prompt, completion, total, cost = _sums(events[:-2])
    assert (costs.prompt_tokens, costs.completion_tokens, costs.total_tokens) == (prompt, completion, total)
    assert (prompt, completion, total) == (10 + 20 + 3, 6 + 5, 16 + 25 + 3)
    assert costs.cost_usd == pytest.approx(cost, rel=1e-12) and cost > 0


def test_track_costs_nests(client, tmp_log):
    """An outer scope counts its own calls and those of an inner scope; the inner only its own."""
    hilt.instrument(filepath=tmp_log)
    with hilt.track_costs() as outer:
        client.chat.completions.create(model="gpt-4o", messages=OPENING)
        with hilt.track_costs() as inner:
            client.chat.completions.create(model="gpt-4o", messages=TURN_TWO)
    assert (outer.calls, inner.calls) == (2, 1)
    assert inner.total_tokens == 25
    assert outer.total_tokens == 16 + 25
    assert outer.cost_usd == pytest.approx(inner.cost_usd + cost_usd(
        "openai", "gpt-4o-2024-08-06", {"prompt": 10, "completion": 6, "total": 16, "cached": 0, "reasoning": 0}
    ), rel=1e-12)


def test_track_costs_counts_a_stream_read_after_the_block(client, tmp_log):
    """A stream started in a scope and read after it leaves is still counted in that scope."""
    hilt.instrument(filepath=tmp_log)
    with hilt.track_costs() as costs:
        stream = client.chat.completions.create(model="gpt-4o", messages=OPENING, stream=True,
                                                stream_options={"include_usage": True})
    list(stream)
    assert costs.calls == 1
    assert costs.total_tokens == 16


def test_track_costs_threads_are_isolated(server, tmp_log):
    """Two threads, each with its own scope, count only their own calls (interleaved by a barrier)."""
    hilt.instrument(filepath=tmp_log)
    barrier = threading.Barrier(2)
    results = {}
    failures = []

    def worker(name: str, words: str, count: int, fail: bool) -> None:
        try:
            with make_client(server) as client, hilt.track_costs() as costs:
                for _ in range(count):
                    barrier.wait(timeout=10)
                    client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": words}])
                if fail:
                    with make_client(server, base_url=REFUSED_URL) as refused:
                        with pytest.raises(openai.APIConnectionError):
                            refused.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "x"}])
            results[name] = (costs.calls, costs.errors, costs.prompt_tokens, costs.total_tokens)
        except BaseException as exc:  # noqa: BLE001 - reported to the main thread
            failures.append(exc)

    threads = [
        threading.Thread(target=worker, args=("a", "one", 3, False)),
        threading.Thread(target=worker, args=("b", "one two three", 3, True)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert failures == []
    assert results["a"] == (3, 0, 3 * 1, 3 * 3)
    assert results["b"] == (4, 1, 3 * 3, 3 * 7)
    assert len(read_events(tmp_log)) == 14


async def test_track_costs_asyncio_tasks_are_isolated(server, tmp_log):
    """Ten concurrent tasks, each with its own scope, count only their own call; an outer scope counts all."""
    hilt.instrument(filepath=tmp_log)

    async def task(words: int) -> tuple[int, int, float]:
        async with make_async_client(server) as client:
            with hilt.track_costs() as costs:
                await asyncio.sleep(0)
                stream = await client.chat.completions.create(
                    model="gpt-4o", messages=[{"role": "user", "content": " ".join(["w"] * words)}],
                    stream=True, stream_options={"include_usage": True},
                )
                async for _chunk in stream:
                    await asyncio.sleep(0)
        return costs.calls, costs.total_tokens, costs.cost_usd

    with hilt.track_costs() as outer:
        results = await asyncio.gather(*(task(n) for n in range(1, 11)))
    for n, (count, total, cost) in enumerate(results, start=1):
        expected_tokens = {"prompt": n, "completion": n + 1, "total": 2 * n + 1, "cached": 0, "reasoning": 0}
        assert (count, total) == (1, 2 * n + 1)
        assert cost == pytest.approx(cost_usd("openai", "gpt-4o-2024-08-06", expected_tokens), rel=1e-12)
    assert outer.calls == 10
    assert outer.total_tokens == sum(2 * n + 1 for n in range(1, 11))
    grouped = calls(read_events(tmp_log))
    assert len(grouped) == 10
    for prompt, end in grouped.values():  # no task's answer was attached to another task's prompt
        check_pair(prompt, end)
        assert end["content"]["text"] == "Echo: " + prompt["content"]["text"]


def test_user_id_salts_the_conversation_id(client, tmp_log):
    """The same opening from two users (or two tenants) gives two different conversation ids."""
    hilt.instrument(filepath=tmp_log)
    for tags in ({"user_id": "alice"}, {"user_id": "bob"}, {"tenant": "t1"}, {"tenant": "t2"}, {}):
        with hilt.conversation(**tags):
            client.chat.completions.create(model="gpt-4o", messages=OPENING)
    ids = [e["session_id"] for e in read_events(tmp_log) if e["action"] == "prompt"]
    assert len(set(ids)) == 5
    assert ids[0] == conversation_id_for("openai", OPENING, ConversationTags(user_id="alice"))


def test_threads_sharing_one_client_keep_calls_apart(client, tmp_log):
    """Eight threads sharing one client, mixing plain and streamed calls: every answer is linked to its own prompt."""
    hilt.instrument(filepath=tmp_log)
    failures = []

    def worker(index: int) -> None:
        try:
            for turn in range(4):
                text = " ".join([f"t{index}x{turn}"] * (index + 1))
                messages = [{"role": "user", "content": text}]
                if turn % 2:
                    list(client.chat.completions.create(model="gpt-4o", messages=messages, stream=True))
                else:
                    client.chat.completions.create(model="gpt-4o", messages=messages)
        except BaseException as exc:  # noqa: BLE001 - reported to the main thread
            failures.append(exc)

    threads = [threading.Thread(target=worker, args=(index,)) for index in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert failures == []
    grouped = calls(read_events(tmp_log))
    assert len(grouped) == 32
    for pair in grouped.values():
        assert len(pair) == 2
        prompt, end = pair
        check_pair(prompt, end)
        assert end["content"]["text"] == "Echo: " + prompt["content"]["text"]
        assert end["extensions"]["stream"] is prompt["extensions"]["stream"]


def test_turn_resending_the_sdk_message_object_shares_the_id(client, tmp_log):
    """Appending the SDK's own message object to the history keeps the conversation id and records it as a dict."""
    hilt.instrument(filepath=tmp_log)
    history = list(OPENING)
    answer = client.chat.completions.create(model="gpt-4o", messages=history)
    history += [answer.choices[0].message, {"role": "user", "content": "Make it three days."}]
    client.chat.completions.create(model="gpt-4o", messages=history)
    events = read_events(tmp_log)
    assert len({e["session_id"] for e in events}) == 1
    recorded = events[2]["content"]["messages"]
    assert recorded[2]["role"] == "assistant" and recorded[2]["content"] == "Echo: Plan a trip to Rome."
    assert recorded[3] == {"role": "user", "content": "Make it three days."}
