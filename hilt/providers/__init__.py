"""Provider integrations: one module per SDK with ``instrument()`` / ``uninstrument()``.

A provider module only builds events and hands them to :func:`hilt.emit`; it never knows
which handlers exist.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Sequence
from types import ModuleType

from ..errors import HILTError

__all__ = ["KNOWN_PROVIDERS", "load", "resolve"]

#: hilt provider name -> (hilt module, the SDK's import name, the pip package that provides it)
KNOWN_PROVIDERS: dict[str, tuple[str, str, str]] = {
    "openai": ("hilt.providers.openai", "openai", "openai"),
}


def _sdk_installed(sdk: str) -> bool:
    return importlib.util.find_spec(sdk) is not None


def _integration_exists(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def resolve(providers: Sequence[str] | None) -> list[str]:
    """The providers to patch: every installed one for ``None``; the named ones, checked, otherwise.

    Raises:
        HILTError: an unknown provider name, or a named provider whose SDK is not installed.
    """
    if providers is None:
        return [
            name
            for name, (module, sdk, _package) in KNOWN_PROVIDERS.items()
            if _sdk_installed(sdk) and _integration_exists(module)
        ]
    if isinstance(providers, str) or not isinstance(providers, Sequence):
        raise HILTError(f"providers: expected a list such as ['openai'], got {providers!r}")
    chosen: list[str] = []
    for name in providers:
        if name not in KNOWN_PROVIDERS:
            raise HILTError(f"providers: unknown provider {name!r}; known providers are {sorted(KNOWN_PROVIDERS)}")
        module, sdk, package = KNOWN_PROVIDERS[name]
        if not _sdk_installed(sdk):
            raise HILTError(f"providers: {name!r} needs its SDK; install it with: pip install {package}")
        if _integration_exists(module) and name not in chosen:
            chosen.append(name)
    return chosen


def load(name: str) -> ModuleType:
    """The integration module for ``name`` (it has ``instrument()`` and ``uninstrument()``)."""
    return importlib.import_module(KNOWN_PROVIDERS[name][0])
