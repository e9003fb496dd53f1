"""Steps and program files: ``# step N`` splitting, normalising and formatting."""

from __future__ import annotations

import dataclasses
from typing import Sequence

from vpcli.errors import BadInputError
from vpcli.sandbox.limits import DEFAULT_LIMITS, Limits, _STEP_MARKER


# -----------------------------------------------------------------------------
# steps and program files
# -----------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Step:
    """One step of a program.

    Attributes:
        index: Step number, from 1 (the ``# step N`` marker of a program file).
        code: The step's source lines.
        first_line: Line of the step's first code line in its file (1 for agent steps).
        origin: Name of the file the step came from, or None for generated steps.
    """
    index: int
    code: str
    first_line: int = 1
    origin: str | None = None

    def where(self, line: int | None) -> str:
        """How messages name a line of this step (``prog.py line 7 (step 2)``)."""
        line = line or 1
        if self.origin:
            return f'{self.origin} line {self.first_line + line - 1} (step {self.index})'
        return f'step {self.index}, line {line}'


@dataclasses.dataclass
class StepRecord:
    """What running one step produced (for ``metrics.json`` and the agent loop).

    Attributes:
        step: The step that ran.
        seconds: Wall-clock time it took, in s.
        feedback: What ``read(...)`` calls of the step returned, in order.
    """
    step: Step
    seconds: float
    feedback: list = dataclasses.field(default_factory=list)


def split_program(text: str, origin: str | None = None,
                  limits: Limits = DEFAULT_LIMITS) -> list[Step]:
    """Split a program file into steps at ``# step N`` comment lines (N from 1).

    A file without markers is one step. Comment and blank lines before the first marker
    (a header, as ``script.py`` files carry) belong to no step.

    Raises:
        BadInputError: code before the first marker, markers out of order, or a file
            too long; the message names the file and line.
    """
    name = origin or 'program'
    if len(text) > limits.max_source_chars:
        raise BadInputError(f'{name}: program is longer than {limits.max_source_chars} characters')
    lines = text.splitlines()
    markers = [(number, int(m.group(1))) for number, line in enumerate(lines, 1)
               if (m := _STEP_MARKER.match(line))]
    if not markers:
        return [_make_step(1, lines, 1, origin)]
    for number, line in enumerate(lines[:markers[0][0] - 1], 1):
        if line.strip() and not line.lstrip().startswith('#'):
            raise BadInputError(f'{name} line {number}: code before the first "# step 1" marker')
    steps = []
    for position, (line_number, step_number) in enumerate(markers):
        if step_number != position + 1:
            raise BadInputError(f'{name} line {line_number}: expected "# step {position + 1}", '
                                f'found "# step {step_number}" (steps are numbered 1, 2, ...)')
        end = markers[position + 1][0] - 1 if position + 1 < len(markers) else len(lines)
        steps.append(_make_step(step_number, lines[line_number:end], line_number + 1, origin))
    if len(steps) > limits.max_steps:
        raise BadInputError(f'{name}: more than {limits.max_steps} steps')
    return steps


def _make_step(index: int, lines: list[str], first_line: int, origin: str | None) -> Step:
    """A step from its lines, dropping leading and trailing blank lines."""
    start, end = 0, len(lines)
    while start < end and not lines[start].strip():
        start += 1
    while end > start and not lines[end - 1].strip():
        end -= 1
    return Step(index, '\n'.join(lines[start:end]), first_line + start, origin)


def normalize_code(code: str) -> str:
    """Step code as it is stored and written: no leading or trailing blank lines."""
    return _make_step(1, str(code).splitlines(), 1, None).code


def format_program(steps: Sequence[Step | str], header: Sequence[str] = ()) -> str:
    """Program text with ``# step N`` markers, re-runnable with ``voxelprompt exec``.

    Splitting the result with :func:`split_program` gives back the same step code.

    Args:
        steps: The steps that ran (or their code), in order.
        header: Comment lines to put first (without the leading ``#``).
    """
    lines = [f'# {" ".join(str(line).split())}'.rstrip() for line in header]
    text = '\n'.join(lines) + ('\n\n' if lines else '')
    blocks = [f'# step {index}\n{normalize_code(step.code if isinstance(step, Step) else step)}'
              for index, step in enumerate(steps, 1)]
    return text + '\n\n'.join(blocks) + '\n'
