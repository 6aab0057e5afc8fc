"""Compare a port's tensors with golden tensors: where does the port first diverge, and by how much.

    voxtral-oracle compare GOLDEN_DIR CANDIDATE [--json F] [--markdown F] [--only GLOB]
                           [--port-dtype float32|bf16|float16] [--tekken PATH] [--ckpt DIR] [--no-local]
    python tools/compare_tensors.py GOLDEN_DIR CANDIDATE ...

GOLDEN_DIR is a golden set (index.json) or one case directory (manifest.json); CANDIDATE a safetensors
file or a directory of .safetensors/.npy files named like the golden outputs (golden/SPEC.md). Prints a
table in pipeline order and, last, one verdict line. Exit codes: 0 pass, 1 tolerance failure,
2 structural failure (missing tensor, shape, dtype kind, NaN/Inf, golden checksum), 3 usage or I/O.
The checks are oracle/compare.py's, the numbers oracle/metrics.py's. For an e2e case, each stage is
also replayed on the candidate's own input taps (oracle/local_view.py, with the golden's checkpoint):
the table "Where error is added" says which stage adds the error, not only where it first shows, and a
stage adding more than its local tolerance fails. When something fails, the fault catalogue
(oracle/faults.py, ranked by oracle/diagnose.py) names the likely mistakes.
"""

from __future__ import annotations


from oracle.compare import compare
from oracle.diagnose import attach_diagnosis
from oracle.errors import OracleError
from oracle.goldenset import PORT_DTYPES, load_candidate, load_golden
from oracle.local_view import attach_local

from oracle_tools.outputs import write_file_atomic
from oracle_tools.progress import Progress

USAGE_EXIT_CODE = 3  # argparse usage errors exit 3 (1 and 2 are verdicts)


def add_arguments(p) -> None:
    p.add_argument("golden", metavar="GOLDEN_DIR", help="golden set (index.json) or one case dir (manifest.json)")
    p.add_argument("candidate", metavar="CANDIDATE", help="safetensors file, or a directory of .safetensors/.npy files")
    p.add_argument("--json", metavar="F", help="also write the full report as JSON to F")
    p.add_argument("--markdown", metavar="F", help="also write the report as GitHub-flavoured Markdown to F")
    p.add_argument("--only", metavar="GLOB", action="append",
                   help="compare only outputs whose name (or case/name) matches; repeatable")
    p.add_argument("--port-dtype", choices=PORT_DTYPES, default="float32",
                   help="which golden tolerances apply (default float32)")
    p.add_argument("--tekken", metavar="PATH", help="tekken.json for token text (default: the golden provenance's)")
    p.add_argument("--ckpt", metavar="DIR", help="the checkpoint the golden was written from, for the stage-local view"
                   " (default: the golden provenance's; its sha256 is checked)")
    p.add_argument("--no-local", action="store_true",
                   help="skip the stage-local view (each e2e stage replayed on the candidate's own input)")


def _write(path: str, text: str) -> None:
    try:
        write_file_atomic(path, text)
    except OracleError as err:
        raise OracleError(str(err), exit_code=3) from None


def run(args) -> int:
    golden = load_golden(args.golden)
    candidate = load_candidate(args.candidate)
    report = compare(golden, candidate, port_dtype=args.port_dtype, only=args.only, tekken=args.tekken)
    if not args.no_local:
        attach_local(report, golden, candidate, args.ckpt, Progress("stage-local replay"))
    attach_diagnosis(report, golden, candidate)
    if args.json:
        _write(args.json, report.to_json() + "\n")
    if args.markdown:
        _write(args.markdown, report.markdown())
    print(report.text())
    return report.exit_code


if __name__ == "__main__":
    from oracle_tools.cli import run_as_script

    run_as_script("compare")
