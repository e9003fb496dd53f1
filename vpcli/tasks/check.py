"""The oracle check: run each target program in the sandbox with ground-truth vision.

For every sampled task, k* runs step by step in the real sandbox with
:class:`~vpcli.tasks.oracle.OracleVision` as the run's vision network. The outputs
(name, value, unit), the answer, the saved images and every segmentation must equal the
expected results computed directly from the case's ground truth. A failure names what
differed.

Synthesising a case costs seconds on a CPU, so the check (and training, if it likes) can
draw several tasks from one case: :class:`WorldPool` keeps a few cases per kind
(single-session MRI, single-session CT, longitudinal, contrast pair, diffusion pair) and
hands each out up to ``tasks_per_case`` times.
"""

from __future__ import annotations

import collections
import dataclasses
import math
import time
from typing import Any, Callable

import numpy as np

from vpcli.tasks.categories import Expected, TaskDraft, TaskPlan, Unwritable
from vpcli.tasks.sampler import plan_task, write_task
from vpcli.tasks.templates import CATEGORIES

#: relative tolerance for comparing numbers (the same computation on the same masks)
RELATIVE_TOLERANCE = 1e-6


def case_kind(plan: TaskPlan) -> str:
    """Which pool of cases can serve a plan."""
    sessions = plan.request.sessions
    if len(sessions) > 1:
        return 'longitudinal-ct' if sessions[0] == ('CT',) else 'longitudinal'
    if plan.category == 'enhancement':
        return 'contrast'
    if plan.category == 'diffusion':
        return 'diffusion'
    return 'single-ct' if sessions[0] == ('CT',) else 'single'


class WorldPool:
    """Reuses synthesised cases across tasks of the same kind.

    Args:
        tasks_per_case: How many tasks one case serves before a new one is made.
        make_world: ``(plan, rng) -> (CaseInfo, world)``; default synthesises at training
            resolution without artefacts.
    """

    def __init__(self, tasks_per_case: int = 20,
                 make_world: Callable[[TaskPlan, np.random.Generator], tuple] | None = None):
        from vpcli.tasks.oracle import make_world as default_make_world
        self.tasks_per_case = max(1, tasks_per_case)
        self.make_world = make_world or default_make_world
        self.current: dict[str, list] = {}
        self.cases_made = 0
        self.synthesis_seconds = 0.0

    def world_for(self, plan: TaskPlan, rng: np.random.Generator) -> tuple:
        """``(CaseInfo, world)`` for a plan: the kind's current case, or a new one."""
        kind = case_kind(plan)
        entry = self.current.get(kind)
        if entry is None or entry[2] >= self.tasks_per_case:
            started = time.perf_counter()
            info, world = self.make_world(plan, rng)
            self.synthesis_seconds += time.perf_counter() - started
            self.cases_made += 1
            entry = [info, world, 0]
            self.current[kind] = entry
        entry[2] += 1
        return entry[0], entry[1]

    def retire(self, plan: TaskPlan) -> None:
        """Drop the kind's current case (it could not serve a task)."""
        self.current.pop(case_kind(plan), None)


def run_draft(draft: TaskDraft, world) -> tuple[Any, Any]:
    """Run a draft's program in the sandbox with the oracle vision; returns (context, sandbox)."""
    from vpcli.library.context import RunContext
    from vpcli.sandbox import Sandbox, split_program
    from vpcli.tasks.oracle import OracleVision
    context = RunContext(scans=list(world.case.scans), vision=OracleVision(world))
    sandbox = Sandbox(context)
    sandbox.run_program(split_program(draft.program, origin='k*'))
    return context, sandbox


def _same_number(a, b) -> bool:
    if isinstance(a, (tuple, list)) or isinstance(b, (tuple, list)):
        return (isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)) and len(a) == len(b)
                and all(_same_number(x, y) for x, y in zip(a, b)))
    if isinstance(a, str) or isinstance(b, str):
        return a == b
    return math.isclose(float(a), float(b), rel_tol=RELATIVE_TOLERANCE, abs_tol=1e-9)


def _same_volume(a, b) -> bool:
    import torch

    from vpcli.volumes import same_grid
    va, vb = a.volume, b.volume
    return tuple(va.shape) == tuple(vb.shape) and same_grid(va, vb) and torch.equal(va.tensor, vb.tensor)


def compare(draft: TaskDraft, expected: Expected, context, sandbox, world) -> list[str]:
    """What differs between a run and its expected results (empty when the run matches)."""
    problems = []
    got = [(o.name, o.value, o.unit) for o in context.outputs]
    want = [(name, value, unit) for name, (value, unit) in expected.outputs.items()]
    if [g[0] for g in got] != [w[0] for w in want]:
        problems.append(f'outputs {[g[0] for g in got]} != expected {[w[0] for w in want]}')
    else:
        for (name, value, unit), (_, want_value, want_unit) in zip(got, want):
            if unit != want_unit or not _same_number(value, want_value):
                problems.append(f'output {name}: {value!r} {unit} != expected {want_value!r} {want_unit}')
    answers = list(context.answers)
    if expected.answer is None and answers:
        problems.append(f'unexpected answer {answers}')
    if expected.answer is not None and answers != [expected.answer]:
        problems.append(f'answer {answers} != expected {expected.answer!r}')
    saved_images = {s.name: s.volume for s in context.saved if s.kind == 'image'}
    for name, image in expected.images.items():
        if name not in saved_images:
            problems.append(f'image {name} was not saved')
        elif not _same_volume(saved_images[name], image):
            problems.append(f'image {name} differs from the expected image')
    sessions = len(world.session_labels)
    for variable, target in expected.masks.items():
        value = sandbox.value(variable)
        masks = value if isinstance(value, tuple) else (value,)
        if len(masks) != sessions:
            problems.append(f'{variable}: {len(masks)} masks for {sessions} sessions')
            continue
        for session, mask in enumerate(masks):
            truth = world.mask(target, session)
            if not _same_volume(mask, truth):
                problems.append(f'{variable} (session {session}) differs from the ground truth')
            elif not bool(truth.volume.tensor.any()):
                problems.append(f'{variable}: ground truth of "{target}" is empty')
    return problems


@dataclasses.dataclass
class CheckResult:
    """One checked task."""
    category: str
    variant: str
    prompt: str
    program: str
    problems: list[str]
    seconds: float


@dataclasses.dataclass
class CheckReport:
    """All checked tasks and timing."""
    results: list[CheckResult]
    cases_made: int
    synthesis_seconds: float
    total_seconds: float

    def by_category(self) -> dict[str, tuple[int, int]]:
        """Category -> (passed, total), in Table 1 order."""
        counts = collections.OrderedDict((c, [0, 0]) for c in CATEGORIES)
        for result in self.results:
            counts[result.category][1] += 1
            counts[result.category][0] += not result.problems
        return {c: (p, t) for c, (p, t) in counts.items()}

    @property
    def passed(self) -> int:
        return sum(not r.problems for r in self.results)


def oracle_check(count: int, seed: int, tasks_per_case: int = 20,
                 progress: Callable[[int, CheckResult], None] | None = None,
                 make_world=None) -> CheckReport:
    """Sample ``count`` tasks (categories in turn, so all 17 are represented) and check each.

    Args:
        count: Number of tasks.
        seed: Seed of the one random generator.
        tasks_per_case: Tasks drawn from one synthesised case (see :class:`WorldPool`).
        progress: Called after each task with its index and result.
        make_world: Override the case maker (tests).
    """
    from vpcli.errors import VoxelPromptError
    rng = np.random.default_rng(seed)
    pool = WorldPool(tasks_per_case, make_world)
    results = []
    started = time.perf_counter()
    for index in range(count):
        category = CATEGORIES[index % len(CATEGORIES)]
        task_started = time.perf_counter()
        draft = world = None
        for _ in range(20):
            plan = plan_task(rng, category)
            info, world = pool.world_for(plan, rng)
            try:
                draft = write_task(plan, info, rng)
                break
            except Unwritable:
                pool.retire(plan)
        if draft is None:
            result = CheckResult(category, '', '', '', ['no case could serve the task'], 0.0)
        else:
            try:
                context, sandbox = run_draft(draft, world)
                expected = draft.evaluate(world)
                problems = compare(draft, expected, context, sandbox, world)
            except VoxelPromptError as error:
                problems = [f'{type(error).__name__}: {error}']
            result = CheckResult(draft.category, draft.variant, draft.prompt, draft.program,
                                 problems, time.perf_counter() - task_started)
        results.append(result)
        if progress is not None:
            progress(index, result)
    return CheckReport(results, pool.cases_made, pool.synthesis_seconds,
                       time.perf_counter() - started)
