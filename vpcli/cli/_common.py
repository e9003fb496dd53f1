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
