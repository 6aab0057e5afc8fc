"""Opening untrusted files: regular files only, never blocking, and one hardened JSON object reader.

Shapes: none (bytes and dicts). Everything a user hands in (params.json, config.json, tekken.json,
a safetensors header, a golden index or manifest) goes through here, so every one of them gets the
same guarantees:

    open_regular(path)        a regular file opened O_NONBLOCK (a named pipe or a device cannot hang
                              us: it is refused before and after open), or one OracleError line
    read_json_object(path)    bytes capped at ``max_bytes`` *before* reading, UTF-8, JSON, an object at
                              the top; 5000-deep nesting (RecursionError) and 5000-digit integers
                              (ValueError, Python's int_max_str_digits) become one line, not a traceback
    parse_json_object(raw)    the same checks for bytes already in memory (safetensors headers)

Why ``stat`` before ``open``: opening a FIFO for reading blocks until a writer appears, even to find out
that it is one. O_NONBLOCK on top covers the race where the path is swapped between the two calls.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from .errors import OracleError, where

# Largest JSON file we read. The real tekken.json is ~15 MB; golden manifests and configs are KBs.
MAX_JSON_BYTES = 256 * 1024 * 1024


def _oserror(path, err: OSError) -> OracleError:
    if isinstance(err, FileNotFoundError):
        return OracleError(where(path, "file not found"))
    if isinstance(err, IsADirectoryError):
        return OracleError(where(path, "is a directory, expected a file"))
    return OracleError(where(path, f"cannot read: {err.strerror or err}"))


def _check_regular(path, mode: int) -> None:
    if stat.S_ISDIR(mode):
        raise OracleError(where(path, "is a directory, expected a file"))
    if not stat.S_ISREG(mode):
        kind = "a named pipe" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else "a device"
        raise OracleError(where(path, f"is {kind}, not a regular file"))


def check_regular_file(path) -> int:
    """``path``'s size if it is a regular file (symlinks followed), else one OracleError line. Opens nothing."""
    try:
        st = os.stat(path)
    except (OSError, ValueError) as err:  # ValueError: an embedded NUL byte in the name
        raise _oserror(path, err) if isinstance(err, OSError) else OracleError(where(path, "invalid file name")) from None
    _check_regular(path, st.st_mode)
    return st.st_size


def open_regular(path):
    """Open ``path`` for binary reading if (and only if) it is a regular file; never blocks."""
    check_regular_file(path)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except OSError as err:
        raise _oserror(path, err) from None
    try:
        _check_regular(path, os.fstat(fd).st_mode)  # the path may have been swapped since the stat
    except OracleError:
        os.close(fd)
        raise
    return os.fdopen(fd, "rb")


def read_bytes(path, max_bytes: int, what: str = "file") -> bytes:
    """All bytes of a regular file no larger than ``max_bytes`` (checked before reading)."""
    with open_regular(path) as f:
        size = os.fstat(f.fileno()).st_size
        if size > max_bytes:
            raise OracleError(where(path, f"{what} is {size:,} bytes, more than the {max_bytes:,} allowed"))
        try:
            raw = f.read(max_bytes + 1)
        except OSError as err:
            raise _oserror(path, err) from None
    if len(raw) > max_bytes:  # grew while we read
        raise OracleError(where(path, f"{what} is more than the {max_bytes:,} bytes allowed"))
    return raw


def parse_json_object(raw: bytes, source, what: str = "file") -> dict:
    """``raw`` (UTF-8 JSON) as a dict; every way it can fail is one OracleError line naming ``source``."""
    what = "" if what == "file" else f"{what}: "  # "x.json: not valid JSON", "y.safetensors: header: not ..."
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise OracleError(where(source, f"{what}not UTF-8 text (byte {err.start})")) from None
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as err:
        raise OracleError(where(source, f"{what}not valid JSON ({err.msg} at line {err.lineno} "
                                        f"column {err.colno})")) from None
    except RecursionError:
        raise OracleError(where(source, f"{what}not usable JSON: nested too deeply")) from None
    except ValueError as err:  # e.g. "Exceeds the limit (4300 digits) for integer string conversion"
        raise OracleError(where(source, f"{what}not usable JSON: {str(err).splitlines()[0]}")) from None
    if not isinstance(obj, dict):
        raise OracleError(where(source, f"{what}must be a JSON object at the top level, got "
                                        f"{_json_type(obj)}"))
    return obj


def read_json_object(path: str | Path, what: str = "file", max_bytes: int = MAX_JSON_BYTES) -> dict:
    """Read a JSON object file: regular file, size-capped, UTF-8, valid JSON, an object at the top."""
    return parse_json_object(read_bytes(path, max_bytes, what), path, what)


def _json_type(obj) -> str:
    if obj is None:
        return "null"
    return {bool: "a boolean", int: "a number", float: "a number", str: "a string", list: "an array"}.get(
        type(obj), type(obj).__name__)
