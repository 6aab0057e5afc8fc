"""One error type for everything a user can cause.

A bad file, bad audio, a bad candidate or a bad option is reported as one line that names the thing
(a path, a tensor, a key) and the problem. The CLI prints ``str(err)`` and exits non-zero; it never
shows a traceback for an ``OracleError``. Programming errors (failed shape asserts inside the math)
stay ordinary exceptions: they are bugs, not user mistakes.
"""

from __future__ import annotations


class OracleError(Exception):
    """A user-caused failure. ``str(err)`` is a single line; ``exit_code`` is what the CLI returns."""

    exit_code = 2

    def __init__(self, message: str, exit_code: int | None = None):
        # Keep it to one line whatever the caller passed: multi-line messages break the CLI contract.
        super().__init__(" ".join(str(message).split()))
        if exit_code is not None:
            self.exit_code = exit_code


def where(path, detail: str) -> str:
    """Format ``path: detail``, the prefix every file-related message starts with."""
    return f"{path}: {detail}"


def shown(value, limit: int = 60) -> str:
    """``repr(value)`` cut to ``limit`` characters: a hostile file's 5000-digit number or 10 MB list must
    not turn a one-line error into a page."""
    try:
        text = repr(value)
    except ValueError:  # an int too long for str() (Python's int_max_str_digits)
        return f"<an integer of about {value.bit_length() * 0.30103:.0f} digits>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def name_of(text: str, limit: int = 120) -> str:
    """A name from a file (a tensor, a key) as shown in a message: as is when short and printable, else
    quoted and cut (a 300-character or newline-laden name must not break the one-line contract)."""
    if isinstance(text, str) and len(text) <= limit and text.isprintable():
        return text
    return shown(text, limit)
