"""Running one task end to end on a synthesised case (the scan suites)."""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable

from vpcli.errors import BadInputError, VoxelPromptError
from vpcli.evaluate.common import _WRITE_ATTEMPTS, _join, _mean, _normalise, _rng, mask_dice
from vpcli.library.morphometry import volume as mask_volume
from vpcli.quality import assess
from vpcli.volumes import same_geometry


# -----------------------------------------------------------------------------
# running a task on a synthesised case
# -----------------------------------------------------------------------------

@dataclasses.dataclass
class TaskRun:
    """One task run end to end on a synthesised case.

    Attributes:
        draft: The task (prompt, k*, expected results).
        world: The case's ground truth.
        program_run: The :class:`~vpcli.program_run.ProgramRun` (context, sandbox) after the run.
        record: The agent's record (None when the run ended before it was made).
        refused: The prompt was refused (by the gate or the model).
        error: Why the run stopped early (a failed or refused step), else None.
        program_match: The written program equals k* (exact, whitespace aside).
        seconds: Wall time of the run.
    """
    draft: Any
    world: Any
    program_run: Any
    record: Any
    refused: bool
    error: str | None
    program_match: bool
    seconds: float


def _teacher_forced(bundle, prompt: str, program: str, scans, executor):
    """Run k* step by step, φ from the model reading the episode (as joint training does)."""
    import torch

    from vpcli.agent.decoding_grammar import PHI_NAME
    from vpcli.agent.loop import MAX_FEEDBACK_TOKENS, AgentRun, StepResult
    from vpcli.agent.model_text import split_steps, to_executable, to_model_text
    from vpcli.agent.tokenizer import (CODE_START, EMBEDDING, FEEDBACK_END, FEEDBACK_START, MOD,
                                       STEP_END, header_text)

    agent = bundle.agent
    model, tokenizer, special, device = agent.model, agent.tokenizer, agent.special, agent.device
    width = model.config.encoding_width
    lines = [scan.describe() for scan in scans]
    from vpcli.agent.spelling import read_prompt
    record = AgentRun(prompt=prompt, scan_lines=lines)
    ids = [tokenizer.bos_id] + tokenizer.encode(header_text(read_prompt(prompt), lines)) \
        + [special[CODE_START]]
    rows: list[torch.Tensor] = []
    streams: dict[str, int | None] = {scan.name: None for scan in scans}
    for index, code in enumerate(split_steps(program), start=1):
        model_text = to_model_text(code, streams)
        step_ids = tokenizer.encode(model_text) + [special[STEP_END]]
        executable = to_executable(model_text, len(record.phi))
        if executable.phi_calls:
            window = torch.tensor([ids + step_ids], device=device)
            with torch.no_grad():
                _, hidden, _ = model(window, torch.cat(rows) if rows else None)
                positions = [len(ids) + i for i, t in enumerate(step_ids) if t == special[MOD]]
                phi = model.phi(hidden[0, positions]).float().cpu().tolist()
            for markers in executable.phi_calls:
                record.phi.append([phi[i] for i in markers])
            executor.define(PHI_NAME, [list(map(list, call)) for call in record.phi])
        started = time.perf_counter()
        feedback = executor.run(executable.code)
        texts, embedded = [], []
        for item in feedback:
            if getattr(item, 'text', None):
                texts.append(str(item.text))
            if getattr(item, 'embeddings', None) is not None:
                embedded.append(torch.as_tensor(item.embeddings, dtype=torch.float32)
                                .reshape(-1, width).to(device))
        text = '\n'.join(texts)
        count = sum(len(e) for e in embedded)
        rows.extend(embedded)
        ids += step_ids + [special[FEEDBACK_START]] + tokenizer.encode(text)[:MAX_FEEDBACK_TOKENS] \
            + [special[EMBEDDING]] * count + [special[FEEDBACK_END]]
        record.steps.append(StepResult(index=index, model_text=model_text, code=executable.code,
                                       feedback_text=text, embeddings=count, generate_seconds=0.0,
                                       run_seconds=time.perf_counter() - started,
                                       tokens=len(step_ids)))
    record.stopped = True
    return record


def run_task(bundle, draft, world, scans=None, *, programs: str = 'agent', seed: int = 0,
             device: str = 'cpu') -> TaskRun:
    """Run a task's prompt over its case: the agent writes the program (or k* is
    teacher-forced, ``programs='target'``), the real sandbox runs it with the live network.

    Args:
        bundle: Loaded weights.
        draft: The written task.
        world: Its ground truth.
        scans: The scans to run on (default: the case's own).
        programs: ``agent`` or ``target``.
        seed: Seeds Python, NumPy and torch before the run.
        device: Torch device of the run.
    """
    from vpcli.agent.model_text import split_steps, to_model_text
    from vpcli.agent.prompt_run import ProgramRunExecutor
    from vpcli.program_run import ProgramRun, RunSettings, seed_everything

    scans = list(world.case.scans if scans is None else scans)
    seed_everything(seed)
    program_run = ProgramRun(scans, RunSettings(seed=seed, device=device, mode='run',
                                                prompt=draft.prompt), vision=bundle.vision)
    executor = ProgramRunExecutor(program_run)
    started = time.perf_counter()
    record, error, refused = None, None, False
    try:
        if programs == 'target':
            record = _teacher_forced(bundle, draft.prompt, draft.program, scans, executor)
        else:
            record = bundle.agent.run(draft.prompt, [s.describe() for s in scans],
                                      [s.name for s in scans], executor)
            refused = record.refused
            if not refused and not record.steps:
                error = 'the model wrote no program step'
    except VoxelPromptError as failure:
        error = f'{type(failure).__name__}: {failure}'
    except Exception as failure:  # noqa: BLE001 - an internal failure is reported, not hidden
        error = f'internal error: {type(failure).__name__}: {failure}'
    match = False
    if record is not None and not refused:
        streams = {scan.name: None for scan in scans}
        target = [to_model_text(code, streams) for code in split_steps(draft.program)]
        match = _normalise(_join([s.model_text for s in record.steps])) == _normalise(_join(target))
    return TaskRun(draft, world, program_run, record, refused, error, match,
                   time.perf_counter() - started)


def _grid_scan(world, mask, scans) -> str:
    """Name of the scan whose grid a mask lies on (the first such scan)."""
    for scan in scans:
        if mask.volume.geometry is scan.volume.geometry:
            return scan.name
    for scan in scans:
        if same_geometry(mask.volume.geometry, scan.volume.geometry):
            return scan.name
    return scans[0].name


def score_masks(task: TaskRun, scans=None, world=None) -> list[dict]:
    """Dice of the run's masks against the truth of each target k* segments.

    Each k* ``segment`` target (per session) is paired with the first unused mask the
    program made whose description is the same text, else with the first unused mask in
    the order they were made; a target with no mask left scores 0. The truth is the
    target's ground truth on the grid of the mask (the scan it lies on).

    Returns:
        One entry per (k* target, session): ``target``, ``dice``, ``text_match``
        (the mask was named with k*'s text), ``mask`` (the text the program used, or None).
    """
    world = world or task.world
    scans = list(world.case.scans if scans is None else scans)
    made = []
    for entry in task.program_run.context.saved:  # a saved mask is listed again: count it once
        if entry.kind == 'mask' and not any(entry.volume is other.volume for other in made):
            made.append(entry)
    used = [False] * len(made)
    sessions = len(world.session_labels)
    scores = []
    truth_cache: dict[tuple[str, str], Any] = {}
    for _, target in task.draft.segments:
        for _session in range(sessions):
            pick = next((i for i, e in enumerate(made) if not used[i]
                         and e.volume.description == target), None)
            text_match = pick is not None
            if pick is None:
                pick = next((i for i, e in enumerate(made) if not used[i]), None)
            if pick is None:
                scores.append({'target': target, 'dice': 0.0, 'text_match': False, 'mask': None})
                continue
            used[pick] = True
            mask = made[pick].volume
            name = _grid_scan(world, mask, scans)
            key = (target, name)
            if key not in truth_cache:
                truth_cache[key] = _truth_on(world, target, name, scans)
            scores.append({'target': target, 'dice': mask_dice(mask, truth_cache[key]),
                           'text_match': text_match, 'mask': mask.description,
                           'quality': assess(target, mask_volume(mask), mask.quality)})
    return scores


def _qc_calibration(tasks: list[dict]) -> dict:
    """How QC tracks true Dice over scored tasks: Spearman correlation of the QC score
    with Dice, and the share flagged among good (Dice >= 0.8) and poor (< 0.5) masks."""
    from scipy.stats import spearmanr

    from vpcli.quality import SCORE_THRESHOLD
    scored = [t for t in tasks if t.get('qc_score') is not None]
    good = [t for t in scored if t['dice'] >= 0.8]
    poor = [t for t in scored if t['dice'] < 0.5]
    rho = None
    if len(scored) >= 3 and len({t['qc_score'] for t in scored}) > 1:
        rho = float(spearmanr([t['qc_score'] for t in scored], [t['dice'] for t in scored])[0])
    return {'qc_masks': len(scored), 'qc_spearman': rho, 'qc_threshold': SCORE_THRESHOLD,
            'qc_good_masks': len(good),
            'qc_flagged_good': _mean([float(t['qc_flagged']) for t in good]) if good else None,
            'qc_poor_masks': len(poor),
            'qc_flagged_poor': _mean([float(t['qc_flagged']) for t in poor]) if poor else None}


def _truth_on(world, target: str, name: str, scans):
    """Ground truth of ``target`` on the grid of scan ``name`` of ``scans`` (the case's own
    scans, or transformed copies: then the truth of the original scan, moved onto the copy)."""
    original = world.scan(name)
    truth = world.mask_on(target, name)
    scan = next(s for s in scans if s.name == name)
    if scan is original or same_geometry(scan.volume.geometry, original.volume.geometry):
        return truth
    from vpcli.volumes import Mask
    moved = truth.volume.new(truth.volume.tensor.float()).resample_like(
        scan.volume.geometry, mode='nearest')
    return Mask(volume=moved.new(moved.tensor > 0.5, keep_labels=False), sources=truth.sources,
                description=target)


def _draw_task(suite: str, seed: int, index: int, category: str,
               accept: Callable[[Any, Any], bool] | None = None,
               plan_filter: Callable[[Any], bool] | None = None, worlds: int = 5):
    """A held-out task on a held-out case: plan, synthesise (``split='eval'``), then write
    until the prompt is held out and ``accept(draft, world)`` holds."""
    from vpcli.tasks.categories import Unwritable
    from vpcli.tasks.described import is_held_out
    from vpcli.tasks.oracle import make_world
    from vpcli.tasks.sampler import plan_task, write_task

    rng = _rng(suite, seed, index)
    for _ in range(worlds):
        plan = plan_task(rng, category)
        for _ in range(1000):
            if plan_filter is None or plan_filter(plan):
                break
            plan = plan_task(rng, category)
        info, world = make_world(plan, rng, split='eval', training_resolution=True)
        for _ in range(_WRITE_ATTEMPTS):
            try:
                draft = write_task(plan, info, rng)
            except Unwritable:
                continue
            if is_held_out(draft.prompt) and (accept is None or accept(draft, world)):
                return draft, world
    raise RuntimeError(f'{suite}: no held-out {category} task in {worlds} cases')


def _task_line(task: TaskRun) -> str:
    if task.refused:
        return 'refused'
    if task.error:
        return 'failed'
    return 'k* written' if task.program_match else 'other program'


def _check_programs(programs: str) -> None:
    if programs not in ('agent', 'target'):
        raise BadInputError(f'programs {programs!r}: expected agent or target')
