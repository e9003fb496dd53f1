"""Training episodes for the language model: prompt, scan lines, target steps, feedback.

An :class:`Episode` is what code-only training reads: the state μ1 (prompt and scan lines),
the target program k* as model text (``<MOD>`` markers, one step per entry), and per step
the feedback the model reads back. Code-only training does not run the vision network, so
feedback is simulated in the form the sandbox gives it (``read`` of a number: its text; of
an encoding: ``encoding of img0, ...`` plus one ε row per scan, random here); the loss
never covers feedback, and the target program does not depend on it.

:func:`encode_episode` lays an episode out as token ids (see :mod:`vpcli.agent.tokenizer`)
with the mask of positions the loss covers.
"""

from __future__ import annotations

import ast
import dataclasses
from typing import Sequence

import numpy as np

from vpcli.agent.model_text import split_steps, to_model_text
from vpcli.agent.tokenizer import (CODE_START, EMBEDDING, FEEDBACK_END, FEEDBACK_START, REFUSE,
                                   STEP_END, STOP, Tokenizer, header_text)


@dataclasses.dataclass
class Episode:
    """One prompt and the program that answers it.

    Attributes:
        prompt: The prompt.
        scan_lines: One line per scan (``Scan.describe()``).
        steps: Target steps as model text (with ``<MOD>``); empty when refused.
        feedback: Per step, ``(text, number of ε rows)``.
        refused: The target is ``<REFUSE>``.
        category: Task category (``volume``, ..., ``refusal``).
        template: Identifier of the prompt's template (for held-out splits and reports).
    """
    prompt: str
    scan_lines: list[str]
    steps: list[str] = dataclasses.field(default_factory=list)
    feedback: list[tuple[str, int]] = dataclasses.field(default_factory=list)
    refused: bool = False
    category: str = ''
    template: str = ''

    def texts(self) -> list[str]:
        """Every text of the episode (tokenizer corpus)."""
        return [header_text(self.prompt, self.scan_lines), *self.steps, *(t for t, _ in self.feedback)]


def episode_from_program(prompt: str, scan_lines: Sequence[str], scan_names: Sequence[str],
                         program: str, rng: np.random.Generator, category: str = '',
                         template: str = '') -> Episode:
    """An episode from a plain target program (``# step N`` separated; ``phi=`` optional).

    Args:
        prompt: The prompt.
        scan_lines: One line per scan.
        scan_names: Variable names of the scans.
        program: The target program k*.
        rng: Draws the simulated feedback values.
        category: Task category.
        template: Template identifier.
    """
    streams: dict[str, int | None] = {name: None for name in scan_names}
    units: dict[str, str | None] = {}
    steps, feedback = [], []
    for code in split_steps(program):
        steps.append(to_model_text(code, streams))
        feedback.append(simulated_feedback(code, streams, rng, units))
    return Episode(prompt, list(scan_lines), steps, feedback, category=category, template=template)


def simulated_feedback(code: str, streams: dict, rng: np.random.Generator,
                       units: dict | None = None) -> tuple[str, int]:
    """Feedback text and ε row count that the step's ``read`` calls would hand back.

    Encodings read as the vision network's ``encoding of img0, ...`` line; numbers as a
    random value written as the sandbox writes it (6 significant digits, one in twenty an
    exact 0, as an empty mask's volume reads), followed by its unit where the value came
    from a library function that declares one (``v = volume(mask)`` reads ``4.48 mL``).

    Args:
        code: The step's code.
        streams: Scan count of each encoding variable (after the step).
        rng: Draws the values.
        units: Unit of each variable assigned so far, updated with this step's assignments
            (pass the same dict for every step of a program; None: no units).
    """
    from vpcli.library.registry import registry
    from vpcli.sandbox.values import _unit_of
    functions = registry() if units is not None else {}
    texts, rows = [], 0
    for statement in ast.parse(code).body:
        for node in ast.walk(statement):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) \
                    and node.func.id == 'read' and node.args:
                argument = node.args[0]
                name = argument.id if isinstance(argument, ast.Name) else None
                count = streams.get(name) if name else None
                if count:
                    texts.append('encoding of ' + ', '.join(f'img{i}' for i in range(count)))
                    rows += count
                else:
                    value = 0.0 if rng.random() < 0.05 else float(rng.lognormal(1.5, 1.5))
                    unit = (units or {}).get(name) if name else None
                    texts.append(f'{value:.6g}' + (f' {unit}' if unit else ''))
        if units is not None and isinstance(statement, ast.Assign):
            call = statement.value
            entry = functions.get(call.func.id) if isinstance(call, ast.Call) \
                and isinstance(call.func, ast.Name) else None
            for target in statement.targets:
                if isinstance(target, ast.Name):
                    units[target.id] = _unit_of(entry.returns) if entry else None
    return '\n'.join(texts), rows


def refusal_episode(prompt: str, scan_lines: Sequence[str], kind: str = '') -> Episode:
    """An episode whose target is ``<REFUSE>`` (no code)."""
    return Episode(prompt, list(scan_lines), refused=True, category='refusal', template=kind)


def encode_episode(tokenizer: Tokenizer, episode: Episode, encoding_width: int,
                   rng: np.random.Generator) -> tuple[list[int], list[bool], np.ndarray]:
    """Token ids, loss mask and ε rows of an episode.

    Returns:
        ``(ids, trained, encodings)``: ``trained[i]`` says whether token ``i`` is a target
        of the loss (program text, ``<STEP>``, ``<STOP>``, ``<REFUSE>``; never the prompt
        or feedback); ``encodings`` has one row per ``<EMB>`` (shape (n, encoding_width)).
    """
    ids = [tokenizer.bos_id] + tokenizer.encode(header_text(episode.prompt, episode.scan_lines)) \
        + [tokenizer[CODE_START]]
    trained = [False] * len(ids)

    def add(new: list[int], target: bool) -> None:
        ids.extend(new)
        trained.extend([target] * len(new))

    rows = 0
    if episode.refused:
        add([tokenizer[REFUSE]], True)
    else:
        for step, (text, count) in zip(episode.steps, episode.feedback):
            add(tokenizer.encode(step) + [tokenizer[STEP_END]], True)
            add([tokenizer[FEEDBACK_START]] + tokenizer.encode(text) + [tokenizer[EMBEDDING]] * count
                + [tokenizer[FEEDBACK_END]], False)
            rows += count
        add([tokenizer[STOP]], True)
    encodings = rng.standard_normal((rows, encoding_width)).astype(np.float32)
    return ids, trained, encodings
