"""One rule for an exception shown to people: its class and the first line of its text."""

from __future__ import annotations


def short_error(exc: BaseException) -> str:
    """``ClassName: first line of the message`` (the class alone when it says nothing)."""
    text = str(exc).strip()
    first = text.splitlines()[0] if text else ""
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__
