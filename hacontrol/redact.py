"""Scrubbing secrets (passwords, tokens) out of text and structured values.

Everything that leaves the process — logs, journal records, error messages,
API output, hook output — goes through these helpers. They err on the side of
hiding too much: a mangled log line is a nuisance, a leaked password is an
incident.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from psycopg.conninfo import conninfo_to_dict

MASK = "***"

# Key names whose values are secrets wherever they appear: libpq parameters
# (password, sslpassword, oauth_client_secret, and scram_client_key /
# scram_server_key, which authenticate as well as the password they come from),
# environment variables (PGPASSWORD), HTTP headers, API tokens. Matched
# case-insensitively anywhere inside the key name.
_SECRET_KEY_WORDS = (
    "password",
    "passwd",
    "passphrase",
    "secret",
    "token",
    "authorization",
    "api_key",
    "apikey",
    "credential",
    "scram_client_key",
    "scram_server_key",
)
_SECRET_KEY_RE = re.compile("|".join(_SECRET_KEY_WORDS), re.IGNORECASE)
# A key as it appears in text: a word containing one of the secret words, or
# the short spellings "pwd"/"pass" on their own.
_KEY_IN_TEXT = (
    r"[A-Za-z0-9_.-]*(?:" + "|".join(_SECRET_KEY_WORDS) + r")[A-Za-z0-9_.-]*|pwd|pass"
)

# key=value (libpq, URI query strings, shell environment dumps). A libpq value
# is either single-quoted (backslash escapes, possibly unterminated) or runs to
# the next whitespace; an unquoted value cannot hold an unescaped quote.
# Skips an authorization value already masked by _AUTH_RE (keeps its scheme word).
_MASKED_AUTH = r"(?!(?:bearer|basic|token|digest)\s+\*\*\*)"
_KV_RE = re.compile(
    r"(?P<key>\b(?:" + _KEY_IN_TEXT + r"))(?P<sep>\s*=\s*)" + _MASKED_AUTH +
    r"(?P<value>'(?:[^'\\]|\\.)*'?|(?:[^\s'\\]|\\.)+)",
    re.IGNORECASE,
)
# "password": "value" / 'token': 'value' (JSON, Python reprs, YAML-ish output).
_QUOTED_KEY_RE = re.compile(
    r"(?P<q>[\"'])(?P<key>" + _KEY_IN_TEXT + r")(?P=q)(?P<sep>\s*:\s*)"
    r"(?P<value>\"(?:[^\"\\]|\\.)*\"?|'(?:[^'\\]|\\.)*'?|[^\s,}\]]+)",
    re.IGNORECASE,
)
# password: value / token: value at the start of a line or after a separator
# (YAML, "key: value" log lines). Values end at whitespace or a separator.
# An exception's class name before its message is no key ("InvalidPasswordError:
# password authentication failed" keeps both words).
_COLON_RE = re.compile(
    r"(?P<key>(?:^|(?<=[\s,;{(]))(?:" + _KEY_IN_TEXT + r"))"
    r"(?<!Error)(?<!Exception)(?<!Warning)(?P<sep>:[ \t]*)" + _MASKED_AUTH +
    r"(?P<value>[^\s,;}\])\"']+)",
    re.IGNORECASE | re.MULTILINE,
)
# HTTP authorization headers: the scheme word is kept, the credentials are not.
_AUTH_RE = re.compile(
    r"(?P<key>\b(?:proxy-)?authorization)(?P<sep>\s*[:=]\s*)"
    r"(?P<scheme>(?:bearer|basic|token|digest)\s+)?(?P<value>[^\s,;\"']+)",
    re.IGNORECASE,
)
# scheme://user:secret@host — the userinfo ends at the last "@" before the path.
_URI_RE = re.compile(
    r"(?P<prefix>\b[A-Za-z][A-Za-z0-9+.-]*://[^:/?#@\s]*):(?P<value>[^\s/?#]*)@"
)


# Every pattern below, and every secret-looking key, contains one of the secret words,
# "pwd"/"pass" or "://" (case-insensitively): text without any of them is never changed.
_MAYBE_SECRET_RE = re.compile(
    "|".join(re.escape(w) for w in (*_SECRET_KEY_WORDS, "pwd", "pass", "://")), re.IGNORECASE
)


def might_hold_secret(text: str) -> bool:
    """False when redaction would certainly leave ``text`` (or a value whose JSON text
    it is) unchanged: a cheap test before the full, slower redaction."""
    return _MAYBE_SECRET_RE.search(text) is not None


def is_secret_key(name: str) -> bool:
    """Whether a field called ``name`` holds a secret (password, token, ...)."""
    return bool(_SECRET_KEY_RE.search(name)) or name.lower() in {"pwd", "pass"}


def _mask_kv(match: re.Match[str]) -> str:
    return f"{match['key']}{match['sep']}{MASK}"


def _mask_quoted_key(match: re.Match[str]) -> str:
    value = match["value"]
    quote_char = value[0] if value[:1] in {'"', "'"} else ""
    return f"{match['q']}{match['key']}{match['q']}{match['sep']}{quote_char}{MASK}{quote_char}"


def _mask_auth(match: re.Match[str]) -> str:
    return f"{match['key']}{match['sep']}{match['scheme'] or ''}{MASK}"


def _mask_uri(match: re.Match[str]) -> str:
    return f"{match['prefix']}:{MASK}@"


def redact_text(text: str) -> str:
    """``text`` with every password, token or URI credential replaced by ``***``."""
    if not text:
        return text
    text = _URI_RE.sub(_mask_uri, text)
    text = _AUTH_RE.sub(_mask_auth, text)
    text = _QUOTED_KEY_RE.sub(_mask_quoted_key, text)
    text = _KV_RE.sub(_mask_kv, text)
    return _COLON_RE.sub(_mask_kv, text)


def dsn_password(dsn: str) -> str | None:
    """The password written in a libpq DSN (key/value or URI), if any."""
    try:
        params = conninfo_to_dict(dsn)
    except Exception:  # not parseable: callers fall back to pattern redaction
        return None
    password = params.get("password")
    return str(password) if password else None


def redact_dsn(dsn: str) -> str:
    """A libpq DSN (key/value or URI) with its password replaced by ``***``.

    Pattern redaction is backed by parsing: if the result still parses to a
    password (an unusual spelling the patterns missed), every occurrence of
    the original password is masked as well.
    """
    redacted = redact_text(dsn)
    password = dsn_password(dsn)
    if password and dsn_password(redacted) not in (None, MASK):
        for form in sorted({password, quote(password, safe=""), quote(password)}, key=len)[::-1]:
            redacted = redacted.replace(form, MASK)
    return redacted


def redact_value(value: Any, key: str | None = None) -> Any:
    """A copy of ``value`` with secrets scrubbed, recursing into containers.

    Values under secret-looking keys are masked whole; strings are scrubbed
    with :func:`redact_text`; other objects are rendered and scrubbed only if
    their text holds a secret, so plain numbers, enums and the like keep their
    type.
    """
    if key is not None and is_secret_key(key) and value not in (None, "", False, True):
        return MASK
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, bytes | bytearray):
        return redact_text(bytes(value).decode("utf-8", "replace"))
    if isinstance(value, Mapping):
        return {k: redact_value(v, k if isinstance(k, str) else None) for k, v in value.items()}
    if isinstance(value, list):
        return [redact_value(v) for v in value]
    if isinstance(value, tuple) and not hasattr(value, "_fields"):
        return tuple(redact_value(v) for v in value)
    if isinstance(value, set | frozenset):
        return [redact_value(v) for v in value]
    text = str(value)
    scrubbed = redact_text(text)
    return value if scrubbed == text else scrubbed


def redact_mapping(values: Mapping[str, Any]) -> dict[str, Any]:
    """:func:`redact_value` for a mapping, typed as a dict."""
    return {k: redact_value(v, k) for k, v in values.items()}
