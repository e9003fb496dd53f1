"""What a joint step trains on: the synthesised case of a block of joint steps, the task
written for it, and the extra segmentation targets scored on its first encoding."""

from __future__ import annotations

import numpy as np

from vpcli.train.recipe import Recipe


def synthesise_case(recipe: Recipe, block: int):
    """``(plan, world)``: the synthesised case of joint block ``block`` (training split),
    drawn from ``default_rng([seed, 1, block])``."""
    from vpcli.tasks.oracle import make_world
    from vpcli.tasks.sampler import plan_task
    rng = np.random.default_rng([recipe.seed, 1, block])
    plan = plan_task(rng)
    _, world = make_world(plan, rng, split='train', training_resolution=recipe.training_resolution)
    return plan, world


def write_joint_task(rng: np.random.Generator, first_plan, info):
    """A task written for a block's case (``info``: its ``case_info()``), of the same case
    kind as the block's first plan; None when none could be written."""
    from vpcli.tasks.categories import Unwritable
    from vpcli.tasks.check import case_kind
    from vpcli.tasks.described import is_held_out
    from vpcli.tasks.sampler import plan_task, write_task

    kind = case_kind(first_plan)
    for attempt in range(100):
        plan = first_plan if attempt == 99 else plan_task(rng)
        if case_kind(plan) != kind:
            continue
        try:
            draft = write_task(plan, info, rng)
        except Unwritable:
            continue
        if not is_held_out(draft.prompt):  # held-out prompts never reach training
            return draft
    return None


def write_extra_targets(rng: np.random.Generator, info, wanted: int) -> list[tuple[str, str]]:
    """``wanted`` (prompt, target) pairs of segmentation tasks written for a case (``info``:
    its ``case_info()``; held-out prompts skipped)."""
    from vpcli.tasks.categories import Unwritable
    from vpcli.tasks.described import is_held_out
    from vpcli.tasks.sampler import plan_task, write_task

    extras = []
    for _ in range(8 * wanted):
        if len(extras) == wanted:
            break
        plan = plan_task(rng, 'segmentation')
        try:
            draft = write_task(plan, info, rng)
        except Unwritable:
            continue
        if draft.segments and not is_held_out(draft.prompt):
            extras.append((draft.prompt, draft.segments[0][1]))
    return extras
