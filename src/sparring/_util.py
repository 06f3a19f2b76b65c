"""Small private helpers shared across modules."""

from __future__ import annotations


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (or its type name), at most 300 characters, for error messages."""
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]
