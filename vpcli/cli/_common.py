"""What every command shares: error reporting and exit codes.

Commands stay thin: parse options, build a config, call library code, report. A
:class:`~vpcli.errors.VoxelPromptError` becomes one line on stderr and its exit code;
Ctrl-C exits 130 (outputs are written atomically, so nothing partial is left).
"""

from __future__ import annotations

import functools
import sys
from typing import Callable

import typer

from vpcli.errors import ExitCode, VoxelPromptError


def error_line(message: str) -> None:
    """Print one error line to stderr."""
    print(f'voxelprompt: error: {message}', file=sys.stderr, flush=True)


def reports_errors(command: Callable) -> Callable:
    """Turn user-facing errors into one stderr line and the documented exit code."""
    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except VoxelPromptError as error:
            error_line(str(error))
            raise typer.Exit(error.exit_code) from None
        except KeyboardInterrupt:
            error_line('interrupted; no partial outputs were written')
            raise typer.Exit(ExitCode.INTERRUPTED) from None
    return wrapper


def report_warnings(metrics: dict, strict_qc: bool, quiet: bool = False) -> None:
    """Print each quality-control warning of a run as one stderr line (not with ``quiet``:
    they stay in metrics.json); with ``strict_qc`` and at least one warning, exit with
    :attr:`ExitCode.QC_FLAGGED` (outputs are written)."""
    for warning in [] if quiet else metrics.get('warnings', []):
        print(f'voxelprompt: warning: {warning}', file=sys.stderr, flush=True)
    if strict_qc and metrics.get('warnings'):
        raise typer.Exit(ExitCode.QC_FLAGGED)


def stderr_logger(quiet: bool) -> Callable[[str], None]:
    """The commands' progress log: ``voxelprompt: ...`` lines on stderr, none with ``quiet``."""
    def log(message: str) -> None:
        if not quiet:
            print(f'voxelprompt: {message}', file=sys.stderr, flush=True)
    return log


def _value_text(value) -> str:
    if value is None:
        return 'n/a'  # NaN or infinite (null in metrics.json)
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        return f'{value:.6g}'
    if isinstance(value, list):
        return '[' + ', '.join(_value_text(v) for v in value) + ']'
    return str(value)


def print_result(metrics: dict, json_output: bool, log: Callable[[str], None], output) -> None:
    """What ``run`` and ``exec`` print on stdout: the metrics JSON (``--json``), else the
    answer, else one ``name: value unit`` line per measured value (a run without ``answer()``
    still has a result); with neither, a log line says where the volumes went."""
    import json
    if json_output:
        print(json.dumps(metrics, indent=2, allow_nan=False))
    elif metrics['answer'] is not None:
        print(metrics['answer'])
    else:
        for item in metrics['outputs']:
            print(f'{item["name"]}: {_value_text(item["value"])} {item["unit"] or ""}'.rstrip())
        if not metrics['outputs']:
            log(f'no answer and no measured value; {len(metrics["volumes"])} volume(s) '
                f'written to {output}')
