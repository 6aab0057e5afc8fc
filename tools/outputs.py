"""Where the commands write: checked output paths, atomic files, directories published from a staging copy.

Every command that writes goes through here, so the rules hold for all of them:

* a missing, empty or unwritable output path is one ``OracleError`` line, before any work is done;
* a file is written to a fresh temporary name beside it (``O_EXCL``: never through a planted symlink)
  and renamed into place, so an interrupted run leaves no half file that looks complete;
* a directory (golden, trace38, synth) is built in a fresh staging directory beside it and then moved
  in entry by entry with ``os.replace``; a file or symlink already at an entry's name is replaced, not
  written through, so nothing lands outside the output directory.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

from oracle.errors import OracleError, where


def _why(err: OSError) -> str:
    return err.strerror or str(err)


def _lstat(path: Path):
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as err:
        raise OracleError(where(path, f"cannot use as output: {getattr(err, 'strerror', None) or err}")) from None


def _writable_dir(directory: Path, label) -> None:
    if not directory.is_dir():
        raise OracleError(where(label, f"cannot write: {directory} is not a directory"))
    if not os.access(directory, os.W_OK | os.X_OK):
        raise OracleError(where(label, f"cannot write: {directory} is not writable"))


def output_file(path: str) -> Path:
    """Check an output *file* path: not empty, not a directory, its directory exists and is writable."""
    if not path:
        raise OracleError("output path is empty")
    p = Path(path)
    st = _lstat(p)
    if st is not None and os.path.isdir(p):
        raise OracleError(where(p, "is a directory, expected an output file name"))
    parent = p.parent
    if not parent.exists():
        raise OracleError(where(p, f"cannot write: directory {parent} does not exist"))
    _writable_dir(parent, p)
    return p


def output_dir(path: str) -> Path:
    """Check an output *directory* path: not empty, not an existing non-directory, its parent creatable."""
    if not path:
        raise OracleError("output directory is empty")
    p = Path(path)
    st = _lstat(p)
    if st is not None and not os.path.isdir(p):
        raise OracleError(where(p, "exists and is not a directory"))
    parent = p.absolute().parent
    while not parent.exists():  # parents are created (mkdir -p), but only under a directory we can write
        parent = parent.parent
    _writable_dir(parent, p)
    return p


def write_file_atomic(path: str | Path, data: bytes | str) -> None:
    """Write ``data`` to ``path`` via a fresh temporary file in the same directory and a rename."""
    p = output_file(str(path))
    raw = data.encode("utf-8") if isinstance(data, str) else data
    try:
        fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name[:80]}.", suffix=".partial")
    except OSError as err:
        raise OracleError(where(p, f"cannot write: {_why(err)}")) from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(raw)
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)  # what a plain open() would have given
        os.replace(tmp, p)
    except OSError as err:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise OracleError(where(p, f"cannot write: {_why(err)}")) from None


@contextlib.contextmanager
def staged_dir(path: str | Path, last: tuple[str, ...] = ()):
    """Yield a fresh staging directory; on success move its entries into ``path`` (``last`` ones last).

    An entry already in ``path`` under the same name (file, symlink or directory) is removed first and
    replaced by a rename: a symlink planted there is replaced, never followed. On failure the staging
    directory is removed and ``path`` is left as it was.
    """
    final = output_dir(str(path))
    try:
        final.absolute().parent.mkdir(parents=True, exist_ok=True)
        stage = Path(tempfile.mkdtemp(dir=final.absolute().parent, prefix=f".{final.name[:80]}.", suffix=".partial"))
    except OSError as err:
        raise OracleError(where(final, f"cannot write: {_why(err)}")) from None
    try:
        yield stage
        try:
            final.mkdir(exist_ok=True)
            entries = sorted(stage.iterdir(), key=lambda e: (e.name in last, e.name))
            for entry in entries:
                target = final / entry.name
                if target.is_symlink() or (target.exists() and not target.is_dir()):
                    target.unlink()
                elif target.is_dir():
                    shutil.rmtree(target)
                os.replace(entry, target)
        except OSError as err:
            raise OracleError(where(final, f"cannot write: {_why(err)}")) from None
    finally:
        shutil.rmtree(stage, ignore_errors=True)
