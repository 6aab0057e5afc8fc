"""``voxtral-oracle <command>``: the single entry point.

Each command lives in its own module of this package, exposing ``add_arguments(parser)`` and
``run(args) -> int``. A user-caused error (``OracleError``) prints one line and exits with its code
(2 by default; compare uses 1/2/3 as documented); a bug still shows its traceback.

``--plain-layers`` (before the command), or ``VOXTRAL_ORACLE_KERNELS=plain``, runs the plain layer bodies
of ``oracle/layers.py`` instead of their fast kernels (``oracle/kernels.py``) for that command: slower,
the same numbers to rounding; goldens record which ran.

Exit codes (the README's table): every command but compare exits 0 on success, 2 on a usage error or a
bad input (one line on stderr), 1 on an internal error (a bug: a traceback), 130 when interrupted;
compare exits 0 pass, 1 tolerance failure, 2 structural failure, 3 usage or I/O error. A usage error
is one line ending in a pointer to ``--help``. Without ``-v`` nothing but that line reaches stderr:
Python warnings (numpy's RuntimeWarnings) are ignored and C libraries' notes (libmpg123) are dropped.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import os
import sys
import warnings

from oracle.blas import quiet_idle_threads
from oracle.errors import OracleError

COMMANDS = {
    "synth": ("synth_checkpoint", "write a synthetic checkpoint in the real on-disk format"),
    "inspect": ("inspect_weights", "names, shapes, dtypes, parameter counts and statistics of a checkpoint"),
    "transcribe": ("transcribe", "audio file -> text (offline or streaming), greedy"),
    "compare": ("compare_tensors", "compare a port's tensors with golden tensors"),
    "golden": ("golden_cmd", "write golden tensors: every building block, end to end, streaming"),
    "forward": ("reference_forward", "run the oracle on a golden set's inputs and write a candidate"),
    "trace38": ("trace38", "the position-38 trace, with every known porting mistake injected"),
    "fuzz": ("fuzz", "hostile-input campaign: mutated files of every kind through the CLI's entry points"),
}


KERNELS_ENV = "VOXTRAL_ORACLE_KERNELS"  # "fast" (default) or "plain"


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse's usage errors: one line, exit 2 (compare overrides to 3)
        message = " ".join(str(message).split())
        print(f"{self.prog}: error: {message} (see {self.prog} --help)", file=sys.stderr)
        raise SystemExit(getattr(self, "usage_exit_code", 2))


def _empty_argument(args) -> str | None:
    """The name of an argument given as an empty string (argparse would silently take it)."""
    for name, value in vars(args).items():
        values = value if isinstance(value, list) else [value]
        if any(isinstance(v, str) and not v.strip() for v in values):
            return name
    return None


@contextlib.contextmanager
def _quiet_stderr(verbose: bool):
    """Without -v: ignore Python warnings and send C-level writes to fd 2 (libmpg123's notes) to
    /dev/null, while Python's own sys.stderr (our one error line, progress, tracebacks) still gets
    through on a duplicate of the original descriptor."""
    if verbose:
        yield
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            python_on_fd2 = sys.stderr.fileno() == 2
        except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
            python_on_fd2 = False  # a test's captured stream: it does not write to fd 2 anyway
        sys.stderr.flush()
        saved = os.dup(2)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        os.close(devnull)
        old = sys.stderr
        if python_on_fd2:
            sys.stderr = io.TextIOWrapper(io.FileIO(saved, "w", closefd=False), write_through=True,
                                          encoding=old.encoding, errors="backslashreplace")
        try:
            yield
        finally:
            sys.stderr.flush()
            sys.stderr = old
            os.dup2(saved, 2)
            os.close(saved)


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser; with ``only``, just that command's module is imported (the others' full parsers are
    not needed to run it, and importing every command costs ~1 s of numpy/scipy/ml_dtypes start-up)."""
    parser = _Parser(prog="voxtral-oracle", description="numpy reference implementation of Voxtral Mini 4B Realtime")
    parser.add_argument("--plain-layers", action="store_true",
                        help=f"run the plain layers of oracle/layers.py, not their fast kernels (or {KERNELS_ENV}=plain)")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="let warnings and C libraries' notes through to stderr")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    parser.subparsers = {}
    for name, (module, help_text) in COMMANDS.items():
        if only is not None and name != only:
            sub.add_parser(name, help=help_text)
            continue
        mod = importlib.import_module(f"oracle_tools.{module}")
        p = sub.add_parser(name, help=help_text, description=(mod.__doc__ or help_text).strip().splitlines()[0])
        p.usage_exit_code = getattr(mod, "USAGE_EXIT_CODE", 2)
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
        parser.subparsers[name] = p
    return parser


def main(argv: list[str] | None = None) -> int:
    quiet_idle_threads()  # before build_parser imports the command, and with it numpy
    argv = sys.argv[1:] if argv is None else list(argv)
    command = next((a for a in argv if not a.startswith("-")), None)  # the top level takes no option values
    parser = build_parser(only=command if command in COMMANDS else "")
    args, extra = parser.parse_known_args(argv)
    command = getattr(args, "command", None)
    # Unknown options are reported by the command's own parser, so `compare --bogus` exits 3 like
    # every other compare usage error (argparse would report them from the top parser with 2).
    owner = parser.subparsers.get(command, parser)
    if extra:
        owner.error(f"unrecognized arguments: {' '.join(extra)}")
    if not getattr(args, "_run", None):
        parser.error("a COMMAND is required")
    empty = _empty_argument(args)
    if empty is not None:
        owner.error(f"argument {empty.replace('_', '-')} must not be empty")
    from oracle import layers  # after quiet_idle_threads: it loads numpy

    before = layers.KERNELS
    try:
        layers.KERNELS = not (args.plain_layers or _plain_from_env())  # the one switch, for this command only
        with _quiet_stderr(args.verbose):
            return int(args._run(args) or 0)
    except OracleError as err:
        print(f"voxtral-oracle {args.command}: error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print(f"voxtral-oracle {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    finally:
        layers.KERNELS = before


def _plain_from_env() -> bool:
    value = os.environ.get(KERNELS_ENV, "fast")
    if value not in ("fast", "plain"):
        raise OracleError(f"{KERNELS_ENV}={value!r}: choose fast (the default) or plain")
    return value == "plain"


def run_as_script(command: str) -> None:
    """For tools/*.py run directly: ``python tools/inspect_weights.py CKPT`` == ``voxtral-oracle inspect CKPT``."""
    sys.exit(main([command, *sys.argv[1:]]))


if __name__ == "__main__":
    sys.exit(main())
