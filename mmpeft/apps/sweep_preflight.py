"""Every config's ``mmpeft fit`` / ``mmpeft eval`` options parsed before any run of a sweep starts.

Without it a misspelt option in a sweep file's ``args`` (or a grid key) failed each run on its own, after the
run's process had started, with one log per run to read. Parsing builds nothing (no towers, no data): about 0.2 s
per config on a CPU. An app, not part of ``mmpeft.sweeps``: it parses with the training CLI in the ``mmpeft sweep``
process, while the sweep library stays free of torch and Lightning (its runs are subprocesses).
"""

from __future__ import annotations

import contextlib
import functools
import io
from collections.abc import Sequence

from mmpeft.sweeps.spec import RunSpec


def check_run_options(runs: Sequence[RunSpec]) -> None:
    """Raise ``ValueError`` naming each config id whose fit or eval options do not parse, with the parser's
    message. One run per config id is parsed: its seeds differ only in the seed values the sweep itself writes."""
    failures = []
    checked: set[str] = set()
    for run in runs:
        if run.config in checked:
            continue
        checked.add(run.config)
        for args in (run.fit_args, run.eval_args):
            if args is not None and (error := parse_error(args)):
                failures.append(f"{run.config} ({args[0]}): {error}")
    if failures:
        raise ValueError(f"the options of {len(failures)} sweep step{'s' * (len(failures) > 1)} do not parse, so "
                         "no run was started:\n  " + "\n  ".join(failures)
                         + "\nFix the sweep file's args / grid keys (mmpeft fit --help, mmpeft eval --help lists "
                           "the options).")


def parse_error(args: Sequence[str]) -> str | None:
    """The parser's error for ``mmpeft ARGS`` (verb first: ``fit`` or ``eval``), or None when they parse."""
    verb, rest = args[0], list(args[1:])
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            if verb == "fit":
                try:
                    _parse_only_cli()(args=["fit", *rest])
                except _Parsed:
                    return None
            elif verb == "eval":
                from mmpeft.eval.run import parser

                parser().parse_args(rest)
            else:
                raise ValueError(f"a sweep step runs 'fit' or 'eval', not {verb!r}")
    except ValueError as e:  # the training CLI explains an option it cannot parse (mmpeft.option_errors)
        return "; ".join(line for line in str(e).splitlines() if not line.startswith("(mmpeft "))
    except SystemExit as e:
        if e.code in (0, None):
            return None
        lines = [line.strip() for line in err.getvalue().splitlines() if line.strip()]
        errors = [line for line in lines if "error: " in line]  # "PROG: error: ..." (argparse), "error: ..."
        return "; ".join(errors or lines[-1:]) or f"exit code {e.code}"
    return None


class _Parsed(Exception):
    """Raised once the fit options parsed and validated: nothing after parsing runs."""


@functools.cache  # one class for every config a sweep checks
def _parse_only_cli():
    """``MMPeftCLI`` stopped right after jsonargparse parsed and validated the options (required keys, types,
    class paths); ``--print_config`` would have exited before validating them."""
    from mmpeft.cli import MMPeftCLI

    class ParseOnly(MMPeftCLI):
        def parse_arguments(self, parser, args) -> None:
            super().parse_arguments(parser, args)
            raise _Parsed

    return ParseOnly
