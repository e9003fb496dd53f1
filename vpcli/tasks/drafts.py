"""Task plans, drafts and expected results: what passes from planner to writer to checker.

A :class:`TaskPlan` is a task before its case exists; the category's writer turns it into a
:class:`TaskDraft` (prompt, scans, target program k*) or raises :class:`Unwritable`; the
draft's ``evaluate`` gives the :class:`Expected` results from the case's ground truth.
The categories themselves are in :mod:`vpcli.tasks.categories`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

from vpcli.tasks.world import CaseRequest, ScanInfo


@dataclasses.dataclass(frozen=True)
class TaskPlan:
    """A task before its case exists.

    Attributes:
        category: One of :data:`~vpcli.tasks.templates.CATEGORIES`.
        variant: Category-specific variant (``basic``, ``rate``, ``asymmetry``, ``bbox``...).
        request: The case it needs.
        params: Drawn parameters (``lesion``: target a lesion; ``axis``; ``margin_mm``...).
    """
    category: str
    variant: str
    request: CaseRequest
    params: dict


@dataclasses.dataclass(frozen=True)
class Expected:
    """Results k* must reproduce.

    Attributes:
        outputs: ``output`` name -> (value, unit), in call order.
        answer: The ``answer`` text, or None.
        masks: Program variable of each ``segment`` call -> its target text (a tuple of
            per-session masks when the case has two sessions).
        images: ``save`` name -> the expected image (a :class:`~vpcli.volumes.Scan`).
    """
    outputs: dict[str, tuple[Any, str]]
    answer: str | None
    masks: dict[str, str]
    images: dict[str, Any]


@dataclasses.dataclass(frozen=True)
class TaskDraft:
    """A written task: prompt, scans, program, and how to get its expected results.

    Attributes:
        category: Task category.
        variant: Its variant.
        prompt: The prompt text.
        scans: The input scans (what the agent's state lists).
        program: Target program k* (``# step N`` separated).
        segments: (variable, target text) of each ``segment`` call in program order.
        evaluate: Ground truth -> :class:`Expected`.
    """
    category: str
    variant: str
    prompt: str
    scans: tuple[ScanInfo, ...]
    program: str
    segments: tuple[tuple[str, str], ...]
    evaluate: Callable[[Any], Expected]


class Unwritable(Exception):
    """The case cannot serve the planned task (e.g. no lesion can be singled out)."""
