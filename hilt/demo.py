"""The demo: real ``openai`` SDK calls to an embedded OpenAI-compatible server, recorded by hilt.

No API key and no network: everything runs in this process on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from . import conversation, instrument, track_costs, uninstrument
from .session import Session
from .testing import OpenAIServer, ScriptedReply

__all__ = ["run_demo"]

_WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def _calls(server: OpenAIServer | None) -> None:
    """The demo's calls: to the embedded ``server``, or with ``None`` to the real API (key from the environment)."""
    import openai

    connection: dict[str, Any] = {"base_url": server.base_url, "api_key": "demo-key"} if server is not None else {}
    client = openai.OpenAI(**connection)
    client.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "What is an audit trail?"}], temperature=0.2
    )
    stream = client.chat.completions.create(
        model="gpt-4o",
        messages=[{"role": "user", "content": "Stream a short haiku about logs"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    for _chunk in stream:
        pass
    client.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "Weather in Paris?"}], tools=[_WEATHER_TOOL]
    )
    with conversation(user_id="alice", tenant="acme"):
        history: list[Any] = [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "Name a prime number"},
        ]
        first = client.chat.completions.create(model="gpt-4o-mini", messages=history)
        history += [{"role": "assistant", "content": first.choices[0].message.content}, {"role": "user", "content": "And another?"}]
        client.chat.completions.create(model="gpt-4o-mini", messages=history)
    client.embeddings.create(model="text-embedding-3-small", input="hilt records every LLM call")

    async def async_call() -> None:
        async_client = openai.AsyncOpenAI(**connection)
        await async_client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "Hello from asyncio"}])
        await async_client.close()

    asyncio.run(async_call())
    if server is None:
        client.close()
        return  # the real API can't be asked for a 429
    server.enqueue(ScriptedReply.error(429, message="Rate limit reached for gpt-4o", code="rate_limit_exceeded"))
    try:
        client.with_options(max_retries=0).chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "One call too many"}]
        )
    except openai.RateLimitError:
        pass
    client.close()


def run_demo(out: str | Path = "logs/demo.jsonl", live: bool = False) -> dict[str, Any]:
    """Run the demo calls into ``out`` (replaced if present); returns a summary of what was written.

    ``live=True`` calls the real OpenAI API (``OPENAI_API_KEY`` must be set) instead of the embedded server.
    """
    path = Path(out)
    if path.exists():
        path.unlink()
    server = None if live else OpenAIServer().start()
    try:
        instrument(filepath=str(path), providers=["openai"])
        try:
            with track_costs() as costs:
                _calls(server)
        finally:
            uninstrument()
    finally:
        if server is not None:
            server.stop()
    events = list(Session(str(path), mode="r").read())
    statuses: dict[str, int] = {}
    for event in events:
        status = event.extensions.get("status_code")
        if status is not None:
            statuses[str(status)] = statuses.get(str(status), 0) + 1
    return {
        "path": str(path.resolve()),
        "events": len(events),
        "calls": costs.calls,
        "errors": costs.errors,
        "total_tokens": costs.total_tokens,
        "cost_usd": round(costs.cost_usd, 8),
        "status_codes": statuses,
        "conversations": len({event.session_id for event in events}),
    }
