"""``voxtral-oracle <command>``: the single entry point.

Each command lives in its own module of this package, exposing ``add_arguments(parser)`` and
``run(args) -> int``. A user-caused error (``OracleError``) prints one line and exits with its code
(2 by default; compare uses 1/2/3 as documented); a bug still shows its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from oracle.errors import OracleError

COMMANDS = {
    "synth": ("synth_checkpoint", "write a synthetic checkpoint in the real on-disk format"),
    "inspect": ("inspect_weights", "names, shapes, dtypes, parameter counts and statistics of a checkpoint"),
    "transcribe": ("transcribe", "audio file -> text (offline or streaming), greedy"),
    "compare": ("compare_tensors", "compare a port's tensors with golden tensors"),
    "golden": ("golden_cmd", "write golden tensors: every building block, end to end, streaming"),
    "forward": ("reference_forward", "run the oracle on a golden set's inputs and write a candidate"),
    "trace38": ("trace38", "the position-38 trace, with every known porting mistake injected"),
}


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse's usage errors: one line, exit 2 (compare overrides to 3)
        self.print_usage(sys.stderr)
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise SystemExit(getattr(self, "usage_exit_code", 2))


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser; with ``only``, just that command's module is imported (the others' full parsers are
    not needed to run it, and importing every command costs ~1 s of numpy/scipy/ml_dtypes start-up)."""
    parser = _Parser(prog="voxtral-oracle", description="numpy reference implementation of Voxtral Mini 4B Realtime")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, (module, help_text) in COMMANDS.items():
        if only is not None and name != only:
            sub.add_parser(name, help=help_text)
            continue
        mod = importlib.import_module(f"oracle_tools.{module}")
        p = sub.add_parser(name, help=help_text, description=(mod.__doc__ or help_text).strip().splitlines()[0])
        p.usage_exit_code = getattr(mod, "USAGE_EXIT_CODE", 2)
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    command = next((a for a in argv if not a.startswith("-")), None)  # the top level takes no option values
    parser = build_parser(only=command if command in COMMANDS else "")
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except OracleError as err:
        print(f"voxtral-oracle {args.command}: error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print(f"voxtral-oracle {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


def run_as_script(command: str) -> None:
    """For tools/*.py run directly: ``python tools/inspect_weights.py CKPT`` == ``voxtral-oracle inspect CKPT``."""
    sys.exit(main([command, *sys.argv[1:]]))


if __name__ == "__main__":
    sys.exit(main())
