"""Shared pieces of the suites: default counts, seeds, means, Dice, program comparison."""

from __future__ import annotations

import ast
import statistics
from typing import Callable, Sequence

import numpy as np

from vpcli.metrics import dice
from vpcli.volumes import same_geometry


#: suite name -> default ``count`` (sized for a few minutes on 2 CPU cores, small weights)
DEFAULT_COUNTS = {'prompts': 5, 'anatomy': 10, 'lesions': 10, 'characterization': 8,
                  'end-to-end': 30, 'consistency': 3, 'example': 1, 'real': 1, 'paraphrases': 20}
SUITES = tuple(DEFAULT_COUNTS)

#: categories of the characterization and end-to-end suites (categories.py names)
CHARACTERIZATION_CATEGORIES = ('location', 'signal_intensity', 'enhancement', 'diffusion')
END_TO_END_CATEGORIES = ('volume', 'extent', 'intensity')

#: anatomical target kinds the anatomy suite asks about: the aseg structures
ASEG_KINDS = ('subcortical',)

#: suite -> second entry of its generators' seed (first entry: --seed; third: task index)
_STREAMS = {'prompts': 9000, 'refusal': 9001, 'anatomy': 9002, 'lesions': 9003,
            'characterization': 9004, 'end-to-end': 9005, 'consistency': 9006, 'paraphrases': 9007}

#: consistency variants: name -> (isotropic spacing in mm or None, re-orient)
CONSISTENCY_VARIANTS = {'original': (None, False), 'resampled 1.5 mm': (1.5, False),
                        'resampled 2.5 mm': (2.5, False), 'reoriented': (None, True)}

#: most write attempts on one case before a new case is made (a held-out prompt is 1 in 50)
_WRITE_ATTEMPTS = 4000

Progress = Callable[[str], None]


def _no_progress(line: str) -> None:
    pass


def _rng(suite: str, seed: int, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, _STREAMS[suite], index])


def _mean(values: Sequence[float]) -> float | None:
    return float(statistics.fmean(values)) if values else None


def _median(values: Sequence[float]) -> float | None:
    return float(statistics.median(values)) if values else None


def _fraction(part: int, whole: int) -> float | None:
    return part / whole if whole else None


# -----------------------------------------------------------------------------
# Dice
# -----------------------------------------------------------------------------

def mask_dice(prediction, truth) -> float:
    """Dice of two :class:`~vpcli.volumes.Mask` (the prediction is resampled, nearest
    neighbour, onto the truth's grid when the grids differ)."""
    predicted = prediction.volume
    if not same_geometry(predicted.geometry, truth.volume.geometry):
        predicted = predicted.new(predicted.tensor.float()).resample_like(
            truth.volume.geometry, mode='nearest')
    return dice(predicted.tensor[0].cpu().numpy() > 0.5, truth.volume.tensor[0].cpu().numpy() > 0.5)


# -----------------------------------------------------------------------------
# program comparison (prompts suite)
# -----------------------------------------------------------------------------

def _normalise(program: str) -> str:
    return ' '.join(program.split())


def _statements(steps: Sequence[str]) -> list[str] | None:
    """The executable statements of model-text steps, as AST dumps (``phi=PHI[k]`` included,
    so where the ``<MOD>`` markers sit counts); None when a step does not convert."""
    from vpcli.agent.model_text import to_executable
    dumps, calls = [], 0
    try:
        for step in steps:
            executable = to_executable(step, calls)
            calls += len(executable.phi_calls)
            dumps.extend(ast.dump(statement) for statement in ast.parse(executable.code).body)
    except (SyntaxError, ValueError):
        return None
    return dumps


def programs_match(written: Sequence[str], target: Sequence[str]) -> tuple[bool, bool]:
    """``(exact, equivalent)`` of a written program against k*, both as model-text steps.

    Exact: the ``# step N`` programs are equal after collapsing whitespace. Equivalent:
    the same executable statements in the same order (equal ASTs with ``phi=PHI[k]``
    spliced in, so the same calls with the same arguments and φ slots), whatever the
    layout, quoting or step boundaries.
    """
    from vpcli.agent.model_text import join_steps
    exact = _normalise(join_steps(written)) == _normalise(join_steps(target))
    if exact:
        return True, True
    mine, theirs = _statements(written), _statements(target)
    return False, mine is not None and mine == theirs


def _percent(value: float | None, digits: int = 1) -> str:
    return 'n/a' if value is None else f'{100 * value:.{digits}f} %'


def _number(value: float | None, digits: int = 3) -> str:
    return 'n/a' if value is None else f'{value:.{digits}f}'


def _join(steps: Sequence[str]) -> str:
    from vpcli.agent.model_text import join_steps
    return join_steps(steps)
