"""Provider integrations: one module per SDK with ``instrument()`` / ``uninstrument()``.

A provider module only builds events and hands them to :func:`hilt.emit`; it never knows
which handlers exist.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import re
from collections.abc import Sequence
from types import ModuleType

from .._internal import report_problem
from ..errors import HILTError

__all__ = ["KNOWN_PROVIDERS", "load", "resolve"]

#: hilt provider name -> (hilt module, the SDK's import name, the pip package that provides it, the oldest
#: release of that package hilt records: the oldest its test suite passes on, checked in CI)
KNOWN_PROVIDERS: dict[str, tuple[str, str, str, str]] = {
    # 1.92.0: chat.completions.parse() and stream() left the beta namespace; older 1.x releases lay the
    # client out differently (before 1.8.0, SyncAPIClient has no _process_response of its own to patch).
    "openai": ("hilt.providers.openai", "openai", "openai", "1.92.0"),
}


def _sdk_installed(sdk: str) -> bool:
    return importlib.util.find_spec(sdk) is not None


def _release(version: str) -> tuple[int, ...]:
    """The leading release numbers of a version string (``"1.92.0rc1"`` -> ``(1, 92, 0)``)."""
    match = re.match(r"\d+(?:\.\d+)*", version)
    return tuple(int(part) for part in match.group().split(".")) if match else ()


def _too_old(package: str, oldest: str) -> str | None:
    """The installed version of ``package`` when it is older than ``oldest``, else ``None`` (also when pip's
    metadata is missing, as in a vendored copy: hilt then tries, and reports what it can't patch)."""
    try:
        installed = importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None
    return installed if _release(installed) < _release(oldest) else None


def _integration_exists(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def resolve(providers: Sequence[str] | None) -> list[str]:
    """The providers to patch: every installed one for ``None``; the named ones, checked, otherwise.

    An installed SDK older than the oldest release hilt records is left alone: named, it raises; found on its
    own, it is reported on ``hilt.internal`` (its calls would not be recorded, and the user must know).

    Raises:
        HILTError: an unknown provider name, or a named provider whose SDK is not installed or too old.
    """
    if providers is None:
        found = []
        for name, (module, sdk, package, oldest) in KNOWN_PROVIDERS.items():
            if not (_sdk_installed(sdk) and _integration_exists(module)):
                continue
            installed = _too_old(package, oldest)
            if installed is None:
                found.append(name)
            else:
                report_problem(f"provider {name} too old", "%s %s is older than %s, the oldest release hilt records: "
                               "its calls are not recorded; upgrade it with: pip install -U '%s>=%s'",
                               package, installed, oldest, package, oldest)
        return found
    if isinstance(providers, str) or not isinstance(providers, Sequence):
        raise HILTError(f"providers: expected a list such as ['openai'], got {providers!r}")
    chosen: list[str] = []
    for name in providers:
        if name not in KNOWN_PROVIDERS:
            raise HILTError(f"providers: unknown provider {name!r}; known providers are {sorted(KNOWN_PROVIDERS)}")
        module, sdk, package, oldest = KNOWN_PROVIDERS[name]
        if not _sdk_installed(sdk):
            raise HILTError(f"providers: {name!r} needs its SDK; install it with: pip install {package}")
        installed = _too_old(package, oldest)
        if installed is not None:
            raise HILTError(f"providers: {name!r} needs {package}>={oldest}, and {package} {installed} is installed; "
                            f"upgrade it with: pip install -U '{package}>={oldest}'")
        if _integration_exists(module) and name not in chosen:
            chosen.append(name)
    return chosen


def load(name: str) -> ModuleType:
    """The integration module for ``name`` (it has ``instrument()`` and ``uninstrument()``)."""
    return importlib.import_module(KNOWN_PROVIDERS[name][0])
