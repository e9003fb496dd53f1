"""Sampling tasks: plan, make the case, write prompt and program, compute expectations.

:func:`plan_task` draws a category's plan; :func:`write_task` writes it against a case
description; :func:`sample_task` runs the whole chain with a case maker (the synthesiser,
through :mod:`vpcli.tasks.oracle`). Everything is driven by one ``numpy`` generator, so a
seed gives the same task.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from vpcli.tasks.categories import TASKS, TaskDraft, TaskPlan, Unwritable, Writer
from vpcli.tasks.templates import CATEGORIES
from vpcli.tasks.world import CaseInfo

#: how many times a task is re-planned when its case cannot serve it
MAX_ATTEMPTS = 20


def plan_task(rng: np.random.Generator, category: str | None = None) -> TaskPlan:
    """Draw a task plan; a uniformly drawn category unless ``category`` is given."""
    if category is None:
        category = CATEGORIES[int(rng.integers(len(CATEGORIES)))]
    planner, _ = TASKS[category]
    return planner(rng)


def write_task(plan: TaskPlan, case: CaseInfo, rng: np.random.Generator,
               phrasing: str = 'templates') -> TaskDraft:
    """Write prompt and target program of a planned task for a case.

    ``phrasing`` chooses where the prompt comes from (:data:`~vpcli.tasks.categories.PHRASINGS`).

    Raises:
        Unwritable: When the case cannot serve the task (the caller re-plans).
    """
    _, writer = TASKS[plan.category]
    return writer(Writer(plan, case, rng, phrasing))


def sample_task(rng: np.random.Generator, make_case: Callable[[TaskPlan, np.random.Generator], tuple],
                category: str | None = None):
    """Plan a task, make its case, and write it; re-plan when a case cannot serve the task.

    Args:
        rng: The one random generator.
        make_case: ``(plan, rng) -> (CaseInfo, ground_truth)``.
        category: Fix the category (default: uniform over the 17).

    Returns:
        ``(draft, case_info, ground_truth)``.
    """
    last_error = None
    for _ in range(MAX_ATTEMPTS):
        plan = plan_task(rng, category)
        case, ground_truth = make_case(plan, rng)
        try:
            return write_task(plan, case, rng), case, ground_truth
        except Unwritable as error:
            last_error = error
    raise RuntimeError(f'could not write a {category or "random"} task in {MAX_ATTEMPTS} attempts: '
                       f'{last_error}')
