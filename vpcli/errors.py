"""Errors that reach a user, and the process exit codes they map to.

Every error a user can cause is a :class:`VoxelPromptError` subclass whose message is
one line naming the file (or program line) and the problem. The CLI prints that line to
stderr and exits with the class's ``exit_code``. The codes are documented in
``docs/exit-codes.md``; keep the two in step.
"""

from __future__ import annotations


class ExitCode:
    """Process exit codes of every ``voxelprompt`` command."""
    OK = 0
    RUNTIME_FAILURE = 1     #: an unexpected internal failure (a bug: please report it)
    USAGE = 2               #: bad command-line usage (unknown option, missing argument)
    BAD_INPUT = 3           #: an input file or output folder is unusable
    REFUSED = 4             #: the prompt or program was refused (out of scope, breaks a sandbox rule)
    PROGRAM_FAILED = 5      #: the program ran but a step failed (error in a step, step time limit)
    PARTIAL = 6             #: a batch finished but at least one subject failed
    QC_FLAGGED = 7          #: with --strict-qc: the run finished, but QC flagged a mask or a measurement
    INTERRUPTED = 130       #: interrupted (Ctrl-C / SIGINT); nothing partial is left behind


class VoxelPromptError(Exception):
    """Base class of errors reported to the user as one line."""
    exit_code = ExitCode.RUNTIME_FAILURE


class BadInputError(VoxelPromptError):
    """An input (scan, label map, script, sidecar, output folder) cannot be used."""
    exit_code = ExitCode.BAD_INPUT


class RefusedError(VoxelPromptError):
    """A prompt or program is outside what voxelprompt will do."""
    exit_code = ExitCode.REFUSED


class ProgramError(VoxelPromptError):
    """A program step failed while running."""
    exit_code = ExitCode.PROGRAM_FAILED
