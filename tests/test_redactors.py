"""hilt.redactors: the built-in ``redact=`` functions for e-mails, phones, cards and API keys."""

from __future__ import annotations

import openai
import pytest

import hilt
from hilt.redactors import (
    API_KEY,
    CARD,
    EMAIL,
    PHONE,
    combine,
    redact_all,
    redact_api_keys,
    redact_cards,
    redact_emails,
    redact_phones,
)
from hilt.testing import OpenAIServer, ScriptedReply

SK_KEY = "sk-proj-" + "Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4z" + "Q7rS0tU3vW"
JWT = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"

EMAILS = [
    "jane.doe@example.com",
    "j+tag@mail.example.co.uk",
    "first_last-99@sub-domain.example.io",
    "UPPER.Case@Example.ORG",
]
NOT_EMAILS = ["user@localhost", "@handle", "a@b", "name@domain.c", "email me at jane dot doe", "x @ y.com"]

PHONES = [
    "+44 20 7946 0958",
    "+1 (415) 555-2671",
    "+1-415-555-2671",
    "+33 1 23 45 67 89",
    "+49 (0)30 1234567",
    "+442079460958",
    "(415) 555-2671",
    "415-555-2671",
    "415.555.2671",
    "415 555 2671",
    "1-800-555-0199",
    "020 7946 0958",
    "06 12 34 56 78",
    "(030) 123 4567",
]
NOT_PHONES = [
    "2024-01-15",
    "2024-01-15T10:30:00Z",
    "2024-01-15 10:30:45",
    "15/01/2024",
    "01-15-2024",
    "05.06.2024 10:30",
    "12:30:45",
    "42",
    "1234",
    "12345678",
    "1.2.3",
    "v2.31.0",
    "10.0.19041.1",
    "192.168.1.100",
    "+5",
    "3 + 4 = 7",
    "1 000 000",
]

VALID_CARDS = [
    "4111111111111111",  # Visa
    "4111 1111 1111 1111",
    "4111-1111-1111-1111",
    "5555555555554444",  # Mastercard
    "378282246310005",  # Amex
    "3782 822463 10005",
    "6011111111111117",  # Discover
    "4222222222222",  # 13-digit Visa
    "30569309025904",  # Diners, 14 digits
]
INVALID_CARDS = [
    "4111111111111112",
    "4111 1111 1111 1112",
    "1234567812345678",
    "378282246310006",
    "411111111111",  # 12 digits, too short (and not Luhn-relevant)
    "41111111111111111111",  # 20 digits
    "4111 1111 1111",
]

API_KEYS = [
    SK_KEY,
    "sk-" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8s9T0u1V2w3X4",
    "sk-ant-api03-" + "Zy9Xw8Vu7Ts6Rq5Po4Nm3Lk2Ji1Hg0Fe-AbCdEf_123",
    "AIzaSyD-" + "1234567890abcdefghijklmnopqrstu",
    "ghp_" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8",
    "gho_" + "Z9y8X7w6V5u4T3s2R1q0P9o8N7m6L5k4J3i2",
    "github_pat_" + "11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz",
    "xoxb-" + "123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx",
    "xoxp-" + "1234567890-abcdefghij",
    "AKIAIOSFODNN7EXAMPLE",
    JWT,
]
NOT_API_KEYS = [
    "sk-short",
    "task-management-is-hard",
    "risk-free-investment-strategies",
    "AKIA1234",
    "AIzaShort",
    "ghp_short",
    "eyJhbGciOiJIUzI1NiJ9",  # one JWT segment alone
    "the bearer of bad news",
    "Bearer short",
    "xoxz-1234567890-abcdef",
]


@pytest.mark.parametrize("email", EMAILS)
def test_email_is_redacted(email):
    """Each e-mail address becomes [EMAIL], and the text around it is kept exactly."""
    assert redact_emails(f"Write to <{email}>, please.") == "Write to <[EMAIL]>, please."
    assert EMAIL.fullmatch(email)


@pytest.mark.parametrize("text", NOT_EMAILS)
def test_non_email_is_left_alone(text):
    """Strings that are not full addresses (no dot-TLD, no local part) are not touched."""
    assert redact_emails(text) == text


@pytest.mark.parametrize("phone", PHONES)
def test_phone_is_redacted(phone):
    """International, US and national phone formats become [PHONE], surrounding text kept."""
    assert redact_phones(f"Call me at {phone}. Thanks") == "Call me at [PHONE]. Thanks"
    assert PHONE.fullmatch(phone)


@pytest.mark.parametrize("text", NOT_PHONES)
def test_dates_times_versions_and_small_numbers_are_not_phones(text):
    """ISO dates, times, version strings, IPs, bare digit runs and small numbers are not touched."""
    assert redact_phones(f"see {text} here") == f"see {text} here"


@pytest.mark.parametrize("card", VALID_CARDS)
def test_luhn_valid_card_is_redacted(card):
    """A Luhn-valid 13-19 digit number (plain, spaced or dashed) becomes [CARD]."""
    assert redact_cards(f"card: {card}, exp 12/29") == "card: [CARD], exp 12/29"
    assert CARD.fullmatch(card)


@pytest.mark.parametrize("number", INVALID_CARDS)
def test_luhn_invalid_or_wrong_length_number_is_left_alone(number):
    """A number failing Luhn, or outside 13-19 digits, is not touched."""
    assert redact_cards(f"id {number}.") == f"id {number}."


def test_card_inside_a_longer_line_of_numbers():
    """A card between other numbers is found by its own grouping, and its neighbours are kept."""
    assert redact_cards("12 4111 1111 1111 1111 2029") == "12 [CARD] 2029"


@pytest.mark.parametrize("key", API_KEYS)
def test_api_key_is_redacted(key):
    """Each supported key or token shape becomes [API_KEY], surrounding text kept."""
    assert redact_api_keys(f'key="{key}";') == 'key="[API_KEY]";'
    assert API_KEY.fullmatch(key)


@pytest.mark.parametrize("text", NOT_API_KEYS)
def test_non_key_is_left_alone(text):
    """Short or differently-prefixed strings and ordinary words are not touched."""
    assert redact_api_keys(text) == text


@pytest.mark.parametrize("token", [SK_KEY, JWT, "abc123.DEF456/ghi789+jkl=="])
def test_bearer_token_keeps_the_word_bearer(token):
    """In 'Bearer <token>' the token is replaced and 'Bearer' (any case) is kept."""
    assert redact_api_keys(f"Authorization: Bearer {token}\n") == "Authorization: Bearer [API_KEY]\n"
    assert redact_api_keys(f"authorization: bearer {token}") == "authorization: bearer [API_KEY]"


ALL_FUNCTIONS = [redact_emails, redact_phones, redact_cards, redact_api_keys, redact_all]
MIXED = (
    f"Hi, I'm jane.doe@example.com, phone +44 20 7946 0958 or (415) 555-2671; card 4111 1111 1111 1111, "
    f"key {SK_KEY}, Authorization: Bearer {JWT}. Meeting on 2024-01-15 at 10:30, running v1.2.3."
)


@pytest.mark.parametrize("redactor", ALL_FUNCTIONS, ids=lambda f: f.__name__)
@pytest.mark.parametrize("text", [MIXED, *EMAILS, *PHONES, *VALID_CARDS, *API_KEYS, *NOT_PHONES, ""])
def test_redactors_are_idempotent(redactor, text):
    """Applying a redactor twice gives the same text as applying it once."""
    once = redactor(text)
    assert redactor(once) == once


def test_redact_all_on_mixed_text():
    """redact_all replaces every kind and leaves every other character where it was."""
    assert redact_all(MIXED) == (
        "Hi, I'm [EMAIL], phone [PHONE] or [PHONE]; card [CARD], key [API_KEY], "
        "Authorization: Bearer [API_KEY]. Meeting on 2024-01-15 at 10:30, running v1.2.3."
    )


@pytest.mark.parametrize("redactor", ALL_FUNCTIONS, ids=lambda f: f.__name__)
def test_text_without_matches_is_returned_unchanged(redactor):
    """Ordinary text, unicode and whitespace included, is returned character for character."""
    text = "Plain prose: café, naïve, 日本語, tabs\tand\nnewlines, 3 apples, 2024-01-15, v10.0.1 — done.\r\n"
    assert redactor(text) == text


def test_redact_all_runs_keys_first():
    """A key containing digit runs is replaced whole, not partly eaten by the card or phone redactor."""
    key = "sk-" + "4111111111111111-415-555-2671-abcdefgh"
    assert redact_all(f"k={key}") == "k=[API_KEY]"


def test_combine_applies_left_to_right():
    """combine(f, g)(x) == g(f(x)): the order given is the order applied."""
    def first(text: str) -> str:
        return text.replace("a", "b")

    def second(text: str) -> str:
        return text.replace("b", "c")

    assert combine(first, second)("a") == "c"
    assert combine(second, first)("a") == "b"
    assert combine()("unchanged") == "unchanged"
    assert combine(redact_emails, str.upper)("x jane@example.com") == "X [EMAIL]"


def test_combine_rejects_non_callables():
    """combine refuses something that is not a function, when combining rather than when redacting."""
    with pytest.raises(TypeError):
        combine(redact_emails, "not a function")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "adversarial",
    [
        "@" * 1_000_000,
        "1" * 1_000_000,
        "a" * 1_000_000,
        "a@" * 500_000,
        "a." * 500_000 + "@",
        "a@" + "a." * 500_000,
        "1 " * 500_000,
        "1-" * 500_000,
        "0-" * 500_000,
        "+1 " * 333_334,
        "4111 " * 200_000,
        "eyJ" * 333_334,
        "eyJa." * 200_000,
        "sk-" * 333_334,
        "Bearer " * 142_858,
        "x" * 999_990 + "@example.c",
    ],
    ids=lambda s: repr(s[:8]),
)
def test_one_megabyte_of_adversarial_text_finishes(adversarial):
    """1 MB built to provoke backtracking is redacted within pytest-timeout's limit (patterns are linear)."""
    assert len(adversarial) >= 999_990
    result = redact_all(adversarial)
    assert isinstance(result, str)


def test_end_to_end_through_the_openai_sdk(tmp_path):
    """With redact=redact_all, no e-mail, phone, card or sk- key of a chat call reaches the JSONL file."""
    secrets = {
        "email": "jane.doe@example.com",
        "phone": "+1 (415) 555-2671",
        "card": "4111 1111 1111 1111",
        "key": SK_KEY,
    }
    prompt = (
        f"My e-mail is {secrets['email']}, call {secrets['phone']}, "
        f"charge card {secrets['card']}, and use key {secrets['key']}."
    )
    path = tmp_path / "hilt.jsonl"
    with OpenAIServer() as server:
        server.enqueue(ScriptedReply.chat(f"Noted: {secrets['email']} / {secrets['phone']}."))
        hilt.instrument(filepath=path, redact=redact_all, providers=["openai"])
        with openai.OpenAI(base_url=server.base_url, api_key="test", max_retries=0) as client:
            reply = client.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": prompt}]
            )
        hilt.uninstrument()
        sent = server.requests
    assert prompt.encode() in sent[0].raw or prompt in sent[0].body["messages"][0]["content"]  # really sent
    assert secrets["email"] in reply.choices[0].message.content  # the SDK caller still gets the real text

    raw = path.read_bytes()
    for name, value in secrets.items():
        assert value.encode() not in raw, f"{name} leaked into the log file"
    for placeholder in (b"[EMAIL]", b"[PHONE]", b"[CARD]", b"[API_KEY]"):
        assert placeholder in raw, placeholder
