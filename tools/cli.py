"""``voxtral-oracle <command>``: the single entry point.

Each command lives in its own module of this package, exposing ``add_arguments(parser)`` and
``run(args) -> int``. A user-caused error (``OracleError``) prints one line and exits with its code
(2 by default; compare uses 1/2/3 as documented); a bug still shows its traceback.

``--plain-layers`` (before the command), or ``VOXTRAL_ORACLE_KERNELS=plain``, runs the plain layer bodies
of ``oracle/layers.py`` instead of their fast kernels (``oracle/kernels.py``) for that command: slower,
the same numbers to rounding; goldens record which ran.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

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
}


KERNELS_ENV = "VOXTRAL_ORACLE_KERNELS"  # "fast" (default) or "plain"


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse's usage errors: one line, exit 2 (compare overrides to 3)
        self.print_usage(sys.stderr)
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise SystemExit(getattr(self, "usage_exit_code", 2))


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="voxtral-oracle", description="numpy reference implementation of Voxtral Mini 4B Realtime")
    parser.add_argument("--plain-layers", action="store_true",
                        help=f"run the plain layers of oracle/layers.py, not their fast kernels (or {KERNELS_ENV}=plain)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, (module, help_text) in COMMANDS.items():
        mod = importlib.import_module(f"oracle_tools.{module}")
        p = sub.add_parser(name, help=help_text, description=(mod.__doc__ or help_text).strip().splitlines()[0])
        p.usage_exit_code = getattr(mod, "USAGE_EXIT_CODE", 2)
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    quiet_idle_threads()  # before build_parser imports the commands, and with them numpy
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    from oracle import layers  # after quiet_idle_threads: it loads numpy

    before = layers.KERNELS
    try:
        layers.KERNELS = not (args.plain_layers or _plain_from_env())  # the one switch, for this command only
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
