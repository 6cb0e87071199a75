"""Built-in redactors: ``str -> str`` functions for ``hilt.instrument(redact=...)``.

Each replaces what it finds with a placeholder and leaves every other character as it was::

    hilt.instrument(filepath="logs/llm.jsonl", redact=hilt.redactors.redact_all)

- ``redact_emails``: ``jane.doe@example.com`` -> ``[EMAIL]``
- ``redact_phones``: ``+44 20 7946 0958``, ``(415) 555-2671``, ``415.555.2671``, ``020 7946 0958`` -> ``[PHONE]``
- ``redact_cards``: 13-19 digits (contiguous, or in 4-4-4-4(-n) / 4-6-5 groups of spaces or dashes)
  that pass the Luhn check -> ``[CARD]``
- ``redact_api_keys``: ``sk-``/``sk-proj-``/``sk-ant-``, ``AIza``, ``ghp_``/``gho_``/``ghu_``/``ghs_``/``ghr_``,
  ``github_pat_``, ``xoxa-``/``xoxb-``/``xoxp-``, ``AKIA`` keys and JWTs -> ``[API_KEY]``; in ``Bearer <token>``
  only the token is replaced (``Bearer [API_KEY]``)
- ``redact_all``: all of the above, API keys first, then e-mails, cards, phones.

The patterns use only the standard ``re`` module, are compiled once, and are written so that matching
is linear in the text's length (possessive quantifiers, and lookbehinds so that a match can only
start at the beginning of a run of characters): a megabyte of adversarial text is redacted in a
fraction of a second. They are heuristics: they favour missing an odd format over mangling
ordinary text (dates, times, version strings, plain numbers are left alone).
"""

from __future__ import annotations

import re
from collections.abc import Callable

__all__ = [
    "API_KEY",
    "CARD",
    "EMAIL",
    "PHONE",
    "combine",
    "redact_all",
    "redact_api_keys",
    "redact_cards",
    "redact_emails",
    "redact_phones",
]

#: An e-mail address. The local part may only start where a run of address characters starts.
EMAIL = re.compile(
    r"(?<![A-Za-z0-9._%+-])"
    r"[A-Za-z0-9._%+-]{1,64}+"
    r"@(?:[A-Za-z0-9-]{1,63}+\.)+[A-Za-z]{2,63}+"
    r"(?![A-Za-z0-9-])"
)

#: A phone number candidate: international (``+`` and digits in groups), US (3-3-4, optional leading
#: ``1``, optional area code in parentheses) or national with a leading trunk ``0``. ``redact_phones``
#: also requires 8-15 digits (``+`` numbers) or 9-15 digits (the others).
PHONE = re.compile(
    r"(?<![\w+.-])"
    r"(?:"
    r"\+\d++(?:[ .-]?\(\d{1,5}\)[ .-]?\d++|[ .-]\d++)*+"  # +44 20 7946 0958, +1 (415) 555-2671
    r"|(?:1[ .-])?(?:\(\d{3}\)[ ]?|\d{3}[ .-])\d{3}[ .-]\d{4}"  # (415) 555-2671, 1-800-555-0199
    r"|(?:0\d++|\(0\d++\)[ ]?\d++)(?:[ -]\d++)++"  # 020 7946 0958, 06 12 34 56 78, (030) 123 4567
    r")"
    r"(?!\w|[.:-]\d)"
)

#: A payment card number candidate; ``redact_cards`` replaces it only if it passes the Luhn check.
CARD = re.compile(
    r"(?<!\d)"
    r"(?:"
    r"\d{13,19}"
    r"|\d{4}(?P<sep>[ -])\d{4}(?P=sep)\d{4}(?P=sep)\d{1,4}(?:(?P=sep)\d{1,3})?"  # 4111 1111 1111 1111
    r"|\d{4}(?P<sep2>[ -])\d{6}(?P=sep2)\d{4,5}"  # 3782 822463 10005 (Amex), Diners 4-6-4
    r")"
    r"(?!\d)"
)

_TOKEN_CHARS = r"[A-Za-z0-9_-]"
#: An API key or bearer token (the ``bearer`` group holds ``Bearer `` when that form matched).
API_KEY = re.compile(
    r"(?<![A-Za-z0-9_-])"
    r"(?:"
    # 16+ token characters; dots only inside, so a sentence's full stop is not taken
    r"(?P<bearer>(?i:bearer)[ \t]++)(?=[A-Za-z0-9._~+/=-]{16})[A-Za-z0-9_~+/=-]++(?:\.[A-Za-z0-9_~+/=-]++)*+"
    r"|sk-[A-Za-z0-9_-]{20,}+"  # OpenAI sk-, sk-proj-, Anthropic sk-ant-
    r"|AIza[0-9A-Za-z_-]{35}(?![0-9A-Za-z_-])"  # Google
    r"|gh[pousr]_[A-Za-z0-9]{20,}+"  # GitHub tokens
    r"|github_pat_[A-Za-z0-9_]{20,}+"  # GitHub fine-grained tokens
    r"|xox[abp]-[A-Za-z0-9-]{10,}+"  # Slack
    r"|AKIA[0-9A-Z]{16}(?![0-9A-Za-z])"  # AWS access key id
    rf"|eyJ{_TOKEN_CHARS}++\.eyJ{_TOKEN_CHARS}++\.{_TOKEN_CHARS}++"  # JWT
    r")"
)

_NON_DIGIT = re.compile(r"\D")


def _luhn(digits: str) -> bool:
    """Whether a string of digits passes the Luhn checksum."""
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = ord(char) - 48
        if index % 2:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


def _phone(match: re.Match[str]) -> str:
    text = match.group(0)
    count = len(text) - len(_NON_DIGIT.findall(text))
    low = 8 if text.startswith("+") else 9
    return "[PHONE]" if low <= count <= 15 else text


def _card(match: re.Match[str]) -> str:
    text = match.group(0)
    return "[CARD]" if _luhn(_NON_DIGIT.sub("", text)) else text


def _api_key(match: re.Match[str]) -> str:
    return f"{match.group('bearer') or ''}[API_KEY]"


def redact_emails(text: str) -> str:
    """Replace e-mail addresses with ``[EMAIL]``."""
    return EMAIL.sub("[EMAIL]", text)


def redact_phones(text: str) -> str:
    """Replace phone numbers (international, US, national with a leading 0; separated digits) with ``[PHONE]``."""
    return PHONE.sub(_phone, text)


def redact_cards(text: str) -> str:
    """Replace Luhn-valid card numbers of 13-19 digits with ``[CARD]``; other digit runs are left alone."""
    return CARD.sub(_card, text)


def redact_api_keys(text: str) -> str:
    """Replace API keys, JWTs and bearer tokens with ``[API_KEY]`` (``Bearer`` itself is kept)."""
    return API_KEY.sub(_api_key, text)


def redact_all(text: str) -> str:
    """All built-in redactors: API keys first, then e-mails, cards, phones."""
    return redact_phones(redact_cards(redact_emails(redact_api_keys(text))))


def combine(*redactors: Callable[[str], str]) -> Callable[[str], str]:
    """One redactor that applies ``redactors`` left to right (no redactors: the text unchanged)."""
    for redactor in redactors:
        if not callable(redactor):
            raise TypeError(f"combine: expected functions taking and returning a string, got {redactor!r}")
    chain = tuple(redactors)

    def combined(text: str) -> str:
        for redactor in chain:
            text = redactor(text)
        return text

    return combined
