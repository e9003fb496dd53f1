"""Program text as the model writes it versus the code the sandbox runs.

The model writes a step with ``<MOD>`` markers and no ``phi=`` arguments::

    enc = encode(img0<MOD>, img1<MOD>)
    hippocampus = segment(enc, 'left hippocampus'<MOD><MOD>)

The rule (DESIGN.md §2, paper App. A.1, with one change): one ``<MOD>`` after each volume
argument of ``encode``; after the *target* argument of ``segment``, one ``<MOD>`` per stream
of the encoding it segments (the number of scans that encoding holds). The hidden state at
each ``<MOD>`` gives the φ of one stream.

Why after the target (model text version 2): a causal model's state at a ``<MOD>`` placed
right after the encoding (version 1, ``segment(enc<MOD>, 'target')``) has not read the
target yet, so φ could only carry it from the prompt; measured over six targets it varied
by about 3 % of its norm, and the vision network returned one mask for every target
(``benchmarks/phi_spread.py``, docs/training.md). After the target text, φ sees it. The code that runs (and that ``script.py`` keeps) has the markers removed
and ``phi=PHI[k]`` added to the k-th vision call of the run; ``PHI`` is a constant list
defined by the script's first step (``PHI = [[[...32 floats...], ...], ...]``: per call,
per stream), so the saved script replays exactly.

Target programs from the task sampler are plain code (with or without ``phi=``);
:func:`to_model_text` turns them into the model's canonical text (``ast.unparse`` layout).
"""

from __future__ import annotations

import ast
import dataclasses
from typing import Sequence

from vpcli.agent.decoding_grammar import ENCODE, PHI_NAME, SEGMENT
from vpcli.agent.tokenizer import MOD

#: where the markers sit: 1 = segment's after the encoding argument, 2 = after the target
#: argument. Weights are written for one version (``model_text`` in the agent checkpoint).
MODEL_TEXT_VERSION = 2

#: the comment line that starts step N (1-based) of a saved script
STEP_HEADER = '# step {index}'


def split_steps(program: str) -> list[str]:
    """Split a program on ``# step N`` comment lines into the code of each step.

    A program without step comments is one step. Blank lines and other comments are dropped.
    """
    steps: list[list[str]] = [[]]
    for line in program.splitlines():
        stripped = line.strip()
        if stripped.startswith('#'):
            if stripped[1:].strip().lower().startswith('step') and steps[-1]:
                steps.append([])
            continue
        if stripped:
            steps[-1].append(line)
    return ['\n'.join(lines) + '\n' for lines in steps if lines]


def join_steps(steps: Sequence[str]) -> str:
    """A program with ``# step N`` comment lines before each step (1-based)."""
    return ''.join(STEP_HEADER.format(index=i + 1) + '\n' + step.rstrip('\n') + '\n'
                   for i, step in enumerate(steps))


def _offsets(text: str) -> list[int]:
    """Absolute offset of the start of each line (1-based line numbers index it)."""
    starts = [0, 0]
    for line in text.splitlines(keepends=True):
        starts.append(starts[-1] + len(line))
    return starts


def _vision_calls(tree: ast.AST) -> list[ast.Call]:
    calls = [node for node in ast.walk(tree) if isinstance(node, ast.Call)
             and isinstance(node.func, ast.Name) and node.func.id in (ENCODE, SEGMENT)]
    return sorted(calls, key=lambda node: (node.lineno, node.col_offset))


def to_model_text(code: str, streams: dict[str, int | None]) -> str:
    """The model's text of one step of plain code: canonical layout, ``<MOD>`` markers.

    Args:
        code: One step of code (``phi=`` arguments are dropped if present).
        streams: Variable -> number of encoded streams, for variables defined by earlier
            steps; updated with this step's assignments.

    Returns:
        The step text, every line ending with a newline.
    """
    tree = ast.parse(code)
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            node.keywords = [k for k in node.keywords if k.arg != 'phi']
    lines = [ast.unparse(statement) for statement in tree.body]
    text = '\n'.join(lines) + '\n'
    tree = ast.parse(text)
    starts = _offsets(text)
    inserts: list[tuple[int, str]] = []
    for statement in tree.body:
        for call in _vision_calls(statement):
            if call.func.id == ENCODE:
                for argument in call.args:
                    inserts.append((starts[argument.end_lineno] + argument.end_col_offset, MOD))
            elif call.args:
                argument = call.args[0]
                count = streams.get(argument.id) if isinstance(argument, ast.Name) else None
                if not count:
                    raise ValueError(f'segment of {ast.unparse(argument)!r}, which is not an encoding')
                if len(call.args) < 2:
                    raise ValueError('segment without a positional target argument')
                target = call.args[1]
                inserts.append((starts[target.end_lineno] + target.end_col_offset, MOD * count))
        _track_streams(statement, streams)
    for offset, marker in sorted(inserts, reverse=True):
        text = text[:offset] + marker + text[offset:]
    return text


def _track_streams(statement: ast.stmt, streams: dict[str, int | None]) -> None:
    if isinstance(statement, ast.Assign) and len(statement.targets) == 1 and isinstance(
            statement.targets[0], ast.Name):
        value = statement.value
        if isinstance(value, ast.Call) and isinstance(value.func, ast.Name) and value.func.id == ENCODE:
            streams[statement.targets[0].id] = len(value.args)
        elif isinstance(value, ast.Name):
            streams[statement.targets[0].id] = streams.get(value.id)
        else:
            streams[statement.targets[0].id] = None


@dataclasses.dataclass
class ExecutableStep:
    """One step ready to run.

    Attributes:
        code: The code with ``phi=PHI[k]`` arguments.
        phi_calls: For each vision call of the step (in order), the indices of the
            ``<MOD>`` markers (in text order) whose φ it takes.
    """
    code: str
    phi_calls: list[list[int]]


def to_executable(model_text: str, first_call: int) -> ExecutableStep:
    """Replace ``<MOD>`` markers by ``phi=PHI[k]`` arguments.

    Args:
        model_text: A step as the model wrote it.
        first_call: Index into ``PHI`` of the step's first vision call (calls of earlier
            steps come first).

    Returns:
        The executable step and which markers belong to which call.
    """
    pieces = model_text.split(MOD)
    code = pieces[0]
    marker_offsets = []
    for piece in pieces[1:]:
        marker_offsets.append(len(code))
        code += piece
    tree = ast.parse(code)
    starts = _offsets(code)
    calls = []
    for call in _vision_calls(tree):
        arguments = call.args if call.func.id == ENCODE else call.args[1:2]
        ends = {starts[a.end_lineno] + a.end_col_offset for a in arguments}
        markers = [i for i, offset in enumerate(marker_offsets) if offset in ends]
        if markers:
            calls.append((markers, call))
    used = sorted(i for markers, _ in calls for i in markers)
    if used != list(range(len(marker_offsets))):
        raise ValueError('<MOD> markers that belong to no encode/segment volume argument')
    calls.sort(key=lambda item: item[0][0])
    inserts = []
    for k, (markers, call) in enumerate(calls):
        closing = starts[call.end_lineno] + call.end_col_offset - 1
        before = code[:closing].rstrip()
        separator = ' ' if before.endswith(',') or before.endswith('(') else ', '
        inserts.append((closing, f'{separator}phi={PHI_NAME}[{first_call + k}]'))
    for offset, text in sorted(inserts, reverse=True):
        code = code[:offset].rstrip() + text + code[offset:] if text.startswith(' ') else \
            code[:offset] + text + code[offset:]
    return ExecutableStep(code=code, phi_calls=[markers for markers, _ in calls])


def phi_step(phi: Sequence[Sequence[Sequence[float]]]) -> str:
    """The constant step ``PHI = [...]`` that defines every φ a run used (exact floats)."""
    calls = ', '.join('[' + ', '.join('[' + ', '.join(repr(float(x)) for x in vector) + ']'
                                      for vector in call) + ']' for call in phi)
    return f'{PHI_NAME} = [{calls}]\n'
