"""Evaluation suites of a weights folder (``voxelprompt eval``; docs/evaluation.md).

Every suite runs on the held-out split only: prompts for which
:func:`vpcli.tasks.described.is_held_out` is true (never drawn in code-only training) and,
for the suites that need scans, cases synthesised from the held-out label-map source
(``split='eval'``). Random generators are ``default_rng([seed, 9000 + k, i])`` (suite ``k``,
task ``i``), disjoint from training's ``default_rng([seed, step])`` and
``default_rng([seed, 1, block])``; task ``i`` is the same task whatever ``count`` is.

Suites (each a function returning a plain dict, so a model card can be filled from Python):

- ``prompts``: program writing on described cases (no scans): exact match of the written
  program with k*, execution-equivalence, sandbox rejections; plus the refusal suite.
- ``anatomy`` / ``lesions``: segmentation tasks run end to end (agent, sandbox, live
  vision network); Dice of every mask the program made against the ground truth of the
  target k* names.
- ``characterization``: location, signal, enhancement and diffusion answers.
- ``end-to-end``: volume, extent and intensity outputs against the ground truth.
- ``consistency``: the same volume prompt on a scan resampled and re-oriented.

The scan suites take ``programs='agent'`` (the model writes the program: the product) or
``programs='target'`` (k* teacher-forced through the model for φ: the vision network and
φ alone, without program-writing errors). The CLI always reports which.
"""

from __future__ import annotations

import ast
import dataclasses
import math
import statistics
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from vpcli.agent.run import dry_run
from vpcli.errors import BadInputError, VoxelPromptError
from vpcli.metrics import dice
from vpcli.library.morphometry import volume as mask_volume
from vpcli.quality import assess
from vpcli.volumes import json_ready, same_geometry
from vpcli.real_suite import ATLASES as REAL_ATLASES, format_rows as real_rows
from vpcli.real_suite import headline as real_headline, real_suite
from vpcli.paraphrase_suite import ROW_HEADER as PARAPHRASE_HEADER, format_rows as paraphrase_rows
from vpcli.paraphrase_suite import headline as paraphrase_headline, paraphrases_suite

#: suite name -> default ``count`` (sized for a few minutes on 2 CPU cores, small weights)
DEFAULT_COUNTS = {'prompts': 5, 'anatomy': 10, 'lesions': 10, 'characterization': 8,
                  'end-to-end': 9, 'consistency': 3, 'example': 1, 'real': 1, 'paraphrases': 20}
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
    from vpcli.agent.program import to_executable
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
    from vpcli.agent.program import join_steps
    exact = _normalise(join_steps(written)) == _normalise(join_steps(target))
    if exact:
        return True, True
    mine, theirs = _statements(written), _statements(target)
    return False, mine is not None and mine == theirs


# -----------------------------------------------------------------------------
# the refusal suite
# -----------------------------------------------------------------------------

def _dry_run(bundle, prompt: str, scan_lines: Sequence[str], seed: int):
    """:func:`vpcli.agent.run.dry_run` with the bundle's agent."""
    return dry_run(bundle.agent, prompt, scan_lines, seed)


def refusal_report(bundle, seed: int = 0, progress: Progress = _no_progress) -> dict:
    """Run every prompt of the packaged refusal suite (:func:`vpcli.agent.refusal.refusal_suite`).

    Returns:
        ``refused`` fraction (target >= 0.95), by gate and by model, per kind, and
        ``outside_library``: programs written for a prompt that was not refused and that
        the sandbox's validation rejected (target 0).
    """
    from vpcli.agent.refusal import MODEL_REFUSAL, refusal_suite
    rows = refusal_suite()
    scans = (['img0: T1w, date unknown, session 01'],
             ['img0: FLAIR, date 2021-04-02, session 01', 'img1: T1w, date 2021-04-02, session 01'])
    per_kind: dict[str, dict] = {}
    refused = by_gate = by_model = outside = errors = 0
    examples = []
    for index, (kind, prompt) in enumerate(rows):
        entry = per_kind.setdefault(kind, {'n': 0, 'refused': 0})
        entry['n'] += 1
        record, problem, status = _dry_run(bundle, prompt, scans[index % 2], seed)
        if status == 'rejected':
            outside += 1
            examples.append({'kind': kind, 'prompt': prompt, 'problem': problem})
        elif status == 'error':
            errors += 1
            examples.append({'kind': kind, 'prompt': prompt, 'problem': problem})
        elif record.refused:
            refused += 1
            entry['refused'] += 1
            if record.refusal_reason == MODEL_REFUSAL:
                by_model += 1
            else:
                by_gate += 1
        else:
            examples.append({'kind': kind, 'prompt': prompt, 'problem': 'not refused',
                             'program': record.model_program()})
    for entry in per_kind.values():
        entry['refused_fraction'] = _fraction(entry['refused'], entry['n'])
    progress(f'refusal suite: {refused}/{len(rows)} refused')
    return {'n': len(rows), 'refused': refused, 'refused_fraction': _fraction(refused, len(rows)),
            'refused_by_gate': by_gate, 'refused_by_model': by_model,
            'outside_library': outside, 'errors': errors, 'per_kind': per_kind,
            'not_refused': examples[:20]}


# -----------------------------------------------------------------------------
# suite 1: prompts
# -----------------------------------------------------------------------------

def prompts_suite(bundle, count: int = DEFAULT_COUNTS['prompts'], seed: int = 0,
                  progress: Progress = _no_progress, categories: Sequence[str] | None = None) -> dict:
    """Program writing on held-out prompts (described cases, dry executor; no scans).

    Args:
        bundle: Loaded weights.
        count: Held-out episodes per task category.
        seed: Seed of the draws.
        progress: Progress lines.
        categories: Restrict the categories (default: all 17).
    """
    from vpcli.agent.corpus import sample_episodes
    from vpcli.tasks.templates import CATEGORIES

    chosen = tuple(categories or CATEGORIES)
    per_category: dict[str, dict] = {}
    totals = dict(n=0, exact=0, equivalent=0, programs=0, rejected=0, errors=0, refused=0,
                  unfinished=0)
    examples = []
    for category in chosen:
        rng = _rng('prompts', seed, CATEGORIES.index(category))
        counts = dict(n=0, exact=0, equivalent=0, programs=0, rejected=0, errors=0, refused=0,
                      unfinished=0)
        for episode in sample_episodes(rng, count, split='eval', category=category):
            counts['n'] += 1
            record, problem, status = _dry_run(bundle, episode.prompt, episode.scan_lines, seed)
            if status != 'ok':
                counts['programs'] += 1
                counts['rejected' if status == 'rejected' else 'errors'] += 1
                examples.append({'category': category, 'prompt': episode.prompt, 'problem': problem})
                continue
            if record.refused:
                counts['refused'] += 1
                if len(examples) < 40:
                    examples.append({'category': category, 'prompt': episode.prompt,
                                     'problem': 'refused an in-scope prompt'})
                continue
            counts['programs'] += 1
            counts['unfinished'] += not record.stopped
            exact, equivalent = programs_match([s.model_text for s in record.steps], episode.steps)
            counts['exact'] += exact
            counts['equivalent'] += equivalent
            if not equivalent and len(examples) < 40:
                examples.append({'category': category, 'prompt': episode.prompt,
                                 'problem': 'different program',
                                 'written': record.model_program(),
                                 'target': _join(episode.steps)})
        counts['accuracy'] = _fraction(counts['exact'], counts['n'])
        counts['equivalent_accuracy'] = _fraction(counts['equivalent'], counts['n'])
        per_category[category] = counts
        for key in totals:
            totals[key] += counts[key]
        progress(f'prompts: {category}: {counts["exact"]}/{counts["n"]} exact')
    refusal = refusal_report(bundle, seed, progress)
    metrics = {
        'accuracy': _fraction(totals['exact'], totals['n']),
        'equivalent_accuracy': _fraction(totals['equivalent'], totals['n']),
        'mean_category_accuracy': _mean([c['accuracy'] for c in per_category.values()
                                         if c['accuracy'] is not None]),
        'episodes': totals['n'], 'programs': totals['programs'],
        'sandbox_rejected': totals['rejected'], 'internal_errors': totals['errors'],
        'false_refusals': totals['refused'], 'unfinished': totals['unfinished'],
        'refusal_fraction': refusal['refused_fraction'],
        'refusal_outside_library': refusal['outside_library'],
    }
    return {'suite': 'prompts', 'count': count, 'seed': seed, 'metrics': metrics,
            'per_category': per_category, 'refusal': refusal, 'examples': examples[:40]}


def _join(steps: Sequence[str]) -> str:
    from vpcli.agent.program import join_steps
    return join_steps(steps)


# -----------------------------------------------------------------------------
# running a task on a synthesised case
# -----------------------------------------------------------------------------

@dataclasses.dataclass
class TaskRun:
    """One task run end to end on a synthesised case.

    Attributes:
        draft: The task (prompt, k*, expected results).
        world: The case's ground truth.
        program_run: The :class:`~vpcli.runner.ProgramRun` (context, sandbox) after the run.
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

    from vpcli.agent.grammar import PHI_NAME
    from vpcli.agent.loop import MAX_FEEDBACK_TOKENS, AgentRun, StepResult
    from vpcli.agent.program import split_steps, to_executable, to_model_text
    from vpcli.agent.tokenizer import (CODE_START, EMBEDDING, FEEDBACK_END, FEEDBACK_START, MOD,
                                       STEP_END, header_text)

    agent = bundle.agent
    model, tokenizer, special, device = agent.model, agent.tokenizer, agent.special, agent.device
    width = model.config.encoding_width
    lines = [scan.describe() for scan in scans]
    record = AgentRun(prompt=prompt, scan_lines=lines)
    ids = [tokenizer.bos_id] + tokenizer.encode(header_text(prompt, lines)) + [special[CODE_START]]
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
    from vpcli.agent.program import split_steps, to_model_text
    from vpcli.agent.run import ProgramRunExecutor
    from vpcli.runner import ProgramRun, RunSettings, seed_everything

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


# -----------------------------------------------------------------------------
# suites 2 and 3: anatomy and lesion segmentation
# -----------------------------------------------------------------------------

def _segmentation_suite(suite: str, bundle, count: int, seed: int, device: str, programs: str,
                        progress: Progress, lesions: bool, kinds: Sequence[str] | None) -> dict:
    from vpcli.tasks.ontology import AnatomyTarget, load_ontology, parse_target
    from vpcli.tasks.roi import matching_lesions

    _check_programs(programs)
    ontology = load_ontology()

    def accept(draft, world) -> bool:
        meaning = parse_target(draft.segments[0][1])
        if lesions:
            return not isinstance(meaning, AnatomyTarget)
        return isinstance(meaning, AnatomyTarget) and (kinds is None or meaning.kind in kinds)

    groups: dict[str, list[float]] = {}
    tasks, dices = [], []
    for index in range(count):
        draft, world = _draw_task(suite, seed, index, 'segmentation', accept,
                                  lambda plan: bool(plan.params.get('lesion')) == lesions)
        task = run_task(bundle, draft, world, programs=programs, seed=seed, device=device)
        scores = score_masks(task)
        target = draft.segments[0][1]
        meaning = parse_target(target)
        if lesions:
            leaves = {lesion.class_key for lesion in matching_lesions(meaning, world.lesions())}
            group = ontology.lesion_classes[leaves.pop()].name if len(leaves) == 1 else 'several classes'
        else:
            group = target
        value = _mean([s['dice'] for s in scores])
        groups.setdefault(group, []).append(value)
        dices.append(value)
        qualities = [s['quality'] for s in scores if s.get('quality')]
        qc_scores = [q['score'] for q in qualities if q.get('score') is not None]
        tasks.append({'prompt': draft.prompt, 'target': target, 'group': group, 'dice': value,
                      'qc_score': _mean(qc_scores) if qc_scores else None,
                      'qc_flagged': any(q['flags'] for q in qualities),
                      'qc_flags': [flag for q in qualities for flag in q['flags']],
                      'kind': getattr(meaning, 'kind', 'lesion'), 'status': _task_line(task),
                      'error': task.error, 'text_match': all(s['text_match'] for s in scores),
                      'program': task.record.model_program() if task.record else '',
                      'seconds': round(task.seconds, 2)})
        progress(f'{suite} {index + 1}/{count}: {target}: Dice {value:.3f} '
                 f'({_task_line(task)}, {task.seconds:.1f} s)')
    key = 'per_class' if lesions else 'per_target'
    per_group = {name: {'n': len(values), 'mean_dice': _mean(values)}
                 for name, values in sorted(groups.items())}
    metrics = {'mean_dice': _mean(dices), 'median_dice': _median(dices), 'tasks': count,
               **_status_counts(tasks)}
    if lesions:
        metrics['mean_class_dice'] = _mean([g['mean_dice'] for g in per_group.values()])
    else:
        metrics['mean_target_dice'] = _mean([g['mean_dice'] for g in per_group.values()])
        metrics.update(_qc_calibration(tasks))
    return {'suite': suite, 'count': count, 'seed': seed, 'programs': programs,
            'metrics': metrics, key: per_group, 'tasks': tasks}


def _status_counts(tasks: list[dict]) -> dict:
    return {'refused': sum(t['status'] == 'refused' for t in tasks),
            'failed': sum(t['status'] == 'failed' for t in tasks),
            'program_match': sum(t['status'] == 'k* written' for t in tasks)}


def anatomy_suite(bundle, count: int = DEFAULT_COUNTS['anatomy'], seed: int = 0,
                  device: str = 'cpu', programs: str = 'agent', progress: Progress = _no_progress,
                  kinds: Sequence[str] | None = ASEG_KINDS) -> dict:
    """Segmentation of anatomical targets (aseg structures by default; ``kinds=None`` for
    every anatomical target kind) on held-out cases: Dice per target and overall."""
    return _segmentation_suite('anatomy', bundle, count, seed, device, programs, progress,
                               lesions=False, kinds=kinds)


def lesions_suite(bundle, count: int = DEFAULT_COUNTS['lesions'], seed: int = 0,
                  device: str = 'cpu', programs: str = 'agent',
                  progress: Progress = _no_progress) -> dict:
    """Segmentation of lesions on held-out cases: Dice per lesion class and overall."""
    return _segmentation_suite('lesions', bundle, count, seed, device, programs, progress,
                               lesions=True, kinds=None)


# -----------------------------------------------------------------------------
# suite 4: characterization
# -----------------------------------------------------------------------------

def _run_suite_task(suite: str, categories: Sequence[str], index: int, bundle, seed: int,
                    device: str, programs: str):
    """Task ``index`` of a suite that takes its categories in turn: drawn, its expected
    result computed from the ground truth, and run; ``(category, draft, expected, task)``."""
    category = categories[index % len(categories)]
    draft, world = _draw_task(suite, seed, index, category)
    expected = draft.evaluate(world)
    task = run_task(bundle, draft, world, programs=programs, seed=seed, device=device)
    return category, draft, expected, task


def characterization_suite(bundle, count: int = DEFAULT_COUNTS['characterization'], seed: int = 0,
                           device: str = 'cpu', programs: str = 'agent',
                           progress: Progress = _no_progress) -> dict:
    """Location, signal, enhancement and diffusion tasks (categories in turn): a task is
    correct when the run's answer equals the one computed from the ground truth."""
    _check_programs(programs)
    per: dict[str, dict] = {c: {'n': 0, 'correct': 0} for c in CHARACTERIZATION_CATEGORIES}
    tasks = []
    for index in range(count):
        category, draft, expected, task = _run_suite_task(
            'characterization', CHARACTERIZATION_CATEGORIES, index, bundle, seed, device, programs)
        answers = list(task.program_run.context.answers)
        correct = expected.answer is not None and answers == [expected.answer]
        scores = score_masks(task)
        lesion_dice = scores[0]['dice'] if scores else None
        per[category]['n'] += 1
        per[category]['correct'] += correct
        tasks.append({'category': category, 'prompt': draft.prompt, 'expected': expected.answer,
                      'answers': answers, 'correct': correct, 'lesion_dice': lesion_dice,
                      'status': _task_line(task), 'error': task.error,
                      'program': task.record.model_program() if task.record else '',
                      'seconds': round(task.seconds, 2)})
        progress(f'characterization {index + 1}/{count}: {category}: '
                 f'{"correct" if correct else "wrong"} (expected {expected.answer!r}, got '
                 f'{answers!r}; {_task_line(task)}, {task.seconds:.1f} s)')
    for entry in per.values():
        entry['accuracy'] = _fraction(entry['correct'], entry['n'])
    correct = sum(t['correct'] for t in tasks)
    metrics = {'accuracy': _fraction(correct, count), 'correct': correct, 'tasks': count,
               'mean_category_accuracy': _mean([e['accuracy'] for e in per.values()
                                                if e['accuracy'] is not None]),
               'mean_lesion_dice': _mean([t['lesion_dice'] for t in tasks
                                          if t['lesion_dice'] is not None]),
               **_status_counts(tasks)}
    return {'suite': 'characterization', 'count': count, 'seed': seed, 'programs': programs,
            'metrics': metrics, 'per_category': per, 'tasks': tasks}


# -----------------------------------------------------------------------------
# suite 5: end-to-end measurements
# -----------------------------------------------------------------------------

def _components(value) -> list[float] | None:
    if isinstance(value, (list, tuple)):
        parts = [_components(v) for v in value]
        if any(p is None for p in parts):
            return None
        return [x for p in parts for x in p]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return [float(value)]


def output_errors(got: dict, expected) -> dict:
    """Absolute and relative error of each expected output (name -> (value, unit)).

    An output the run did not make, made in another unit, or that is not a number is
    ``missing``. For a vector output (a bounding box) the errors are means over its
    components. Relative error is ``|got - want| / |want|`` (absolute when ``want`` is 0).
    """
    errors = {}
    for name, (want, unit) in expected.outputs.items():
        entry = got.get(name)
        want_parts = _components(want)
        got_parts = None if entry is None or entry[1] != unit else _components(entry[0])
        if want_parts is None or got_parts is None or len(got_parts) != len(want_parts):
            errors[name] = {'missing': True, 'unit': unit, 'expected': want,
                            'got': None if entry is None else entry[0]}
            continue
        absolute = [abs(g - w) for g, w in zip(got_parts, want_parts)]
        relative = [a / abs(w) if w else a for a, w in zip(absolute, want_parts)]
        finite = all(math.isfinite(x) for x in absolute + relative)
        errors[name] = {'missing': not finite, 'unit': unit, 'expected': want, 'got': entry[0],
                        'absolute': statistics.fmean(absolute) if finite else None,
                        'relative': statistics.fmean(relative) if finite else None}
    return errors


#: the headline output of each end-to-end category (first matching name)
_MAIN_OUTPUT = {'volume': ('volume',), 'extent': ('extent_lr', 'extent_ap', 'extent_si',
                                                  'bounding_box'),
                'intensity': ('mean_intensity',)}


def _run_outputs(task: TaskRun) -> dict:
    outputs = {}
    for output in task.program_run.context.outputs:
        outputs.setdefault(output.name, (output.value, output.unit))
    return outputs


def _median_with_missing(values: list[float | None]) -> float | None:
    """Median where a missing value counts as an infinite error (None if that is the median)."""
    if not values:
        return None
    ordered = sorted(math.inf if v is None else v for v in values)
    middle = statistics.median(ordered)
    return None if math.isinf(middle) else float(middle)


def end_to_end_suite(bundle, count: int = DEFAULT_COUNTS['end-to-end'], seed: int = 0,
                     device: str = 'cpu', programs: str = 'agent',
                     progress: Progress = _no_progress) -> dict:
    """Volume, extent and intensity tasks (categories in turn): error of the run's output
    against the value computed from the ground truth."""
    _check_programs(programs)
    tasks = []
    for index in range(count):
        category, draft, expected, task = _run_suite_task(
            'end-to-end', END_TO_END_CATEGORIES, index, bundle, seed, device, programs)
        errors = output_errors(_run_outputs(task), expected)
        main = next(n for n in _MAIN_OUTPUT[category] if n in errors)
        scores = score_masks(task)
        tasks.append({'category': category, 'prompt': draft.prompt, 'output': main,
                      'unit': errors[main]['unit'], 'expected': errors[main]['expected'],
                      'got': errors[main]['got'], 'missing': errors[main]['missing'],
                      'absolute_error': errors[main].get('absolute'),
                      'relative_error': errors[main].get('relative'),
                      'dice': scores[0]['dice'] if scores else None,
                      'status': _task_line(task), 'error': task.error,
                      'program': task.record.model_program() if task.record else '',
                      'seconds': round(task.seconds, 2)})
        shown = 'missing' if errors[main]['missing'] else f'{100 * errors[main]["relative"]:.1f} %'
        progress(f'end-to-end {index + 1}/{count}: {category}: relative error {shown} '
                 f'({_task_line(task)}, {task.seconds:.1f} s)')
    per = {}
    for category in END_TO_END_CATEGORIES:
        mine = [t for t in tasks if t['category'] == category]
        relative = [None if t['missing'] else t['relative_error'] for t in mine]
        present = [r for r in relative if r is not None]
        per[category] = {
            'n': len(mine), 'missing': sum(r is None for r in relative),
            'median_relative_error': _median_with_missing(relative),
            'median_absolute_error': _median_with_missing(
                [None if t['missing'] else t['absolute_error'] for t in mine]),
            'units': sorted({t['unit'] for t in mine}),
            'within_5_percent': _fraction(sum(r <= 0.05 for r in present), len(mine)),
            'within_10_percent': _fraction(sum(r <= 0.10 for r in present), len(mine)),
            'mean_dice': _mean([t['dice'] for t in mine if t['dice'] is not None])}
    metrics = {'median_relative_volume_error': per['volume']['median_relative_error'],
               'median_relative_error': _median_with_missing(
                   [None if t['missing'] else t['relative_error'] for t in tasks]),
               'missing': sum(t['missing'] for t in tasks), 'tasks': count,
               **_status_counts(tasks)}
    return {'suite': 'end-to-end', 'count': count, 'seed': seed, 'programs': programs,
            'metrics': metrics, 'per_category': per, 'tasks': tasks}


# -----------------------------------------------------------------------------
# suite 6: consistency across resolution and orientation
# -----------------------------------------------------------------------------

_ORIENTATIONS = ('PIL', 'SLA', 'ILP', 'LPS')


def transform_scans(scans, spacing_mm: float | None = None, reorient: bool = False) -> list:
    """Copies of the scans resampled to isotropic ``spacing_mm`` (trilinear, antialiased,
    same field of view) or re-oriented (axes permuted and flipped, voxel-to-world matrix
    adjusted: the same world, no interpolation); names and metadata unchanged."""
    out = []
    for scan in scans:
        volume = scan.volume
        if spacing_mm is not None:
            volume = volume.new(volume.tensor.float()).resample(spacing_mm, mode='linear',
                                                                antialias=True)
        if reorient:
            current = volume.geometry.orientation.name
            volume = volume.reorient(next(o for o in _ORIENTATIONS if o != current))
        out.append(dataclasses.replace(scan, volume=volume))
    return out


def consistency_suite(bundle, count: int = DEFAULT_COUNTS['consistency'], seed: int = 0,
                      device: str = 'cpu', programs: str = 'agent',
                      progress: Progress = _no_progress) -> dict:
    """One volume prompt per held-out case, run on the case's scans as they are, resampled
    to 1.5 and 2.5 mm, and re-oriented; the spread of the measured volumes
    ``(max - min) / median`` per case (target <= 3 %)."""
    from vpcli.library.registry import registry

    _check_programs(programs)
    volume_of = registry()['volume'].func
    cases, spreads = [], []
    for index in range(count):
        draft, world = _draw_task('consistency', seed, index, 'volume')
        target = draft.segments[0][1]
        truth = volume_of(world.mask(target, 0))
        variants = {}
        for name, (spacing, reorient) in CONSISTENCY_VARIANTS.items():
            scans = transform_scans(world.case.scans, spacing, reorient)
            task = run_task(bundle, draft, world, scans, programs=programs, seed=seed,
                            device=device)
            got = _run_outputs(task).get('volume')
            value = _components(got[0]) if got and got[1] == 'mL' else None
            value = value[0] if value and len(value) == 1 and math.isfinite(value[0]) else None
            scores = score_masks(task, scans)
            variants[name] = {'volume': value, 'status': _task_line(task), 'error': task.error,
                              'dice': scores[0]['dice'] if scores else None,
                              'shape': list(scans[0].volume.shape[1:]),
                              'seconds': round(task.seconds, 2)}
            progress(f'consistency {index + 1}/{count}: {name}: volume '
                     f'{"missing" if value is None else f"{value:.3f} mL"} ({task.seconds:.1f} s)')
        values = [v['volume'] for v in variants.values()]
        spread = None
        if all(v is not None for v in values):
            middle = statistics.median(values)
            spread = (max(values) - min(values)) / middle if middle > 0 else None
        if spread is not None:
            spreads.append(spread)
        cases.append({'prompt': draft.prompt, 'target': target, 'truth_volume': truth,
                      'spread': spread, 'variants': variants})
    per_case = {f'case {i + 1}: {c["target"]}': {'spread': c['spread'],
                                                  'truth_volume': c['truth_volume'],
                                                  **{n: v['volume'] for n, v in c['variants'].items()}}
                for i, c in enumerate(cases)}
    metrics = {'median_spread': _median_with_missing([c['spread'] for c in cases]),
               'max_spread': max(spreads) if len(spreads) == count and spreads else None,
               'within_3_percent': _fraction(sum(s <= 0.03 for s in spreads), count),
               'incomplete_cases': count - len(spreads), 'cases': count,
               'variants': list(CONSISTENCY_VARIANTS)}
    return {'suite': 'consistency', 'count': count, 'seed': seed, 'programs': programs,
            'metrics': metrics, 'per_case': per_case, 'cases': cases}


# -----------------------------------------------------------------------------
# running a suite, reporting
# -----------------------------------------------------------------------------

#: the real-scan check: prompt, the target k* segments, the example label ids of its reference
EXAMPLE_PROMPTS = (
    ('segment the white matter', 'bilateral cerebral white matter', (2,)),
    # the reference grey matter also holds deep and cerebellar grey matter, which the
    # target (the cerebral cortex) does not
    ('segment the grey matter', 'bilateral cerebral cortex', (1,)),
    ('segment the brain', 'whole brain', (1, 2)),
    # no reference on this scan: their masks show whether the network tells targets apart
    ('segment the lateral ventricles', 'bilateral lateral ventricle', None),
    ('segment the left hippocampus', 'left hippocampus', None),
)


def example_suite(bundle, count: int = 1, seed: int = 0, device: str = 'cpu',
                  programs: str = 'agent', progress: Progress = _no_progress) -> dict:
    """Dice on the one real scan shipped: the MNI ICBM152 2009c T1w (``voxelprompt example``),
    against references made from the template's own tissue probability maps (white matter:
    label 2; brain: labels 1-2 of its grey/white label map, see :mod:`vpcli.examples`).

    The white-matter reference includes cerebellar white matter, which the target
    ``bilateral cerebral white matter`` does not, so a perfect network scores below 1 here.
    Prompts without a reference add their mask volumes and ``target_overlap``: the mean
    Dice between the masks of every two different targets (1.0: the same mask whatever the
    target). ``count`` must be 1: the prompts run once (the run is deterministic).
    """
    import tempfile

    from vpcli.examples import write_example
    from vpcli.library.registry import registry
    from vpcli.volumes import load_scans, load_volume
    if count != 1:
        raise BadInputError(f'--count {count}: the example suite runs its prompts once on the one '
                            'example scan (the run is deterministic); leave --count out')
    per_prompt, dices, arrays = {}, [], []
    with tempfile.TemporaryDirectory() as folder:
        paths = write_example(Path(folder))
        scans = load_scans([paths['T1w']])
        labels = load_volume(paths['dseg'], label_map=True)
        for prompt, target, ids in EXAMPLE_PROMPTS:
            from vpcli.tasks.categories import TaskDraft
            program = f'# step 1\nenc = encode(img0)\n# step 2\nroi = segment(enc, "{target}")\n'
            draft = TaskDraft('segmentation', 'example', prompt, (), program,
                              (('roi', target),), lambda world: None)
            task = run_task(bundle, draft, None, scans, programs=programs, seed=seed, device=device)
            masks = [entry.volume for entry in task.program_run.context.saved if entry.kind == 'mask']
            from vpcli.volumes import Mask
            made = masks[0] if masks and not task.refused else None
            value = None
            if ids is not None:
                reference = Mask(volume=labels.new(torch_isin(labels.tensor, ids)), sources=(),
                                 description=target)
                value = mask_dice(made, reference) if made is not None else 0.0
                dices.append(value)
            if made is not None:
                arrays.append(made.volume.tensor[0].cpu().numpy() > 0.5)
            volume_ml = None if made is None else float(registry()['volume'].func(made))
            per_prompt[prompt] = {'target': target, 'dice': value, 'volume_ml': volume_ml,
                                  'program_match': task.program_match,
                                  'refused': task.refused, 'error': task.error,
                                  'program': [s.model_text for s in task.record.steps]
                                  if task.record is not None else []}
            progress(f'example: {prompt!r} ' + (f'Dice {value:.3f}' if value is not None else
                                                 f'{_number(volume_ml, 1)} mL'))
    overlaps = [dice(a, b) for i, a in enumerate(arrays) for b in arrays[i + 1:]
                if a.shape == b.shape]
    return {'programs': programs,
            'metrics': {'mean_dice': _mean(dices), 'prompts': len(dices),
                        'target_overlap': _mean(overlaps), 'targets': len(arrays)},
            'per_prompt': per_prompt}


def torch_isin(tensor, ids):
    """Boolean tensor: voxels whose label is one of ``ids``."""
    import torch
    return torch.isin(tensor, torch.tensor(list(ids), dtype=tensor.dtype))


_SUITE_FUNCTIONS = {'example': example_suite, 'prompts': prompts_suite, 'anatomy': anatomy_suite, 'lesions': lesions_suite,
                    'characterization': characterization_suite, 'end-to-end': end_to_end_suite,
                    'consistency': consistency_suite, 'real': real_suite,
                    'paraphrases': paraphrases_suite}


def check_suite(suite: str) -> str:
    """The suite name, or a one-line :class:`BadInputError` naming the suites."""
    if suite not in _SUITE_FUNCTIONS:
        raise BadInputError(f'--suite {suite!r}: expected one of {", ".join(SUITES)}')
    return suite


def evaluate(suite: str, bundle, count: int | None = None, seed: int = 0, device: str = 'cpu',
             programs: str = 'agent', progress: Progress = _no_progress) -> dict:
    """Run one suite on loaded weights; the result with weights checksum, device and time."""
    check_suite(suite)
    count = DEFAULT_COUNTS[suite] if count is None else int(count)
    if count < 1:
        raise BadInputError(f'--count {count}: must be at least 1')
    started = time.perf_counter()
    function = _SUITE_FUNCTIONS[suite]
    if suite in ('prompts', 'paraphrases'):  # dry runs: no scans, no vision network
        result = function(bundle, count=count, seed=seed, progress=progress)
    else:
        _check_programs(programs)
        result = function(bundle, count=count, seed=seed, device=device, programs=programs,
                          progress=progress)
    ordered = {'suite': suite, 'weights_sha256': bundle.sha256, 'count': count, 'seed': seed,
               'device': device, 'seconds': round(time.perf_counter() - started, 2)}
    ordered.update({k: v for k, v in result.items() if k not in ordered})
    return json_ready(ordered)


def _percent(value: float | None, digits: int = 1) -> str:
    return 'n/a' if value is None else f'{100 * value:.{digits}f} %'


def _number(value: float | None, digits: int = 3) -> str:
    return 'n/a' if value is None else f'{value:.{digits}f}'


def headline(result: dict) -> str:
    """The one-line headline figure of a suite's result."""
    m, suite = result['metrics'], result['suite']
    mode = '' if result.get('programs', 'agent') == 'agent' else ' (k* teacher-forced)'
    if suite == 'prompts':
        return (f'prompts: exact program match {_percent(m["accuracy"])} on {m["episodes"]} '
                f'held-out prompts (equivalent {_percent(m["equivalent_accuracy"])}); '
                f'{m["sandbox_rejected"]} of {m["programs"]} programs rejected by the sandbox; '
                f'refusal suite {_percent(m["refusal_fraction"])} refused (target >= 95 %), '
                f'{m["refusal_outside_library"]} outside the library (target 0)')
    if suite == 'anatomy':
        qc = ''
        if m.get('qc_masks'):
            qc = (f'; QC score vs Dice Spearman {_number(m.get("qc_spearman"), 2)} over '
                  f'{m["qc_masks"]} masks (target >= 0.6), flagged {_percent(m.get("qc_flagged_good"))} '
                  f'of {m["qc_good_masks"]} good (<= 5 %) and {_percent(m.get("qc_flagged_poor"))} '
                  f'of {m["qc_poor_masks"]} poor masks')
        return (f'anatomy{mode}: mean Dice {_number(m["mean_dice"])} over {m["tasks"]} held-out '
                f'aseg-structure tasks (target >= 0.80){qc}')
    if suite == 'lesions':
        return f'lesions{mode}: mean Dice {_number(m["mean_dice"])} over {m["tasks"]} held-out lesion tasks'
    if suite == 'characterization':
        return (f'characterization{mode}: accuracy {_percent(m["accuracy"])} '
                f'({m["correct"]}/{m["tasks"]}; paper 89.0 %)')
    if suite == 'end-to-end':
        error = _percent(m['median_relative_volume_error'])
        if m['median_relative_volume_error'] is None and m.get('missing'):
            error = f'not met: {m["missing"]} of {m["tasks"]} tasks gave no value'
        return f'end-to-end{mode}: median relative volume error {error} (target <= 5 %)'
    if suite == 'real':
        return real_headline(result)
    if suite == 'paraphrases':
        return paraphrase_headline(result)
    if suite == 'example':
        overlap = (f'; masks of {m["targets"]} targets overlap with mean pairwise Dice '
                   f'{_number(m["target_overlap"])} (1.0: one mask for every target)'
                   if m.get('target_overlap') is not None else '')
        per_prompt = result.get('per_prompt', {})
        scored = ', '.join(f'{p!r} {_number(per_prompt.get(p, {}).get("dice"))}'
                           for p, _, ids in EXAMPLE_PROMPTS if ids is not None)
        return f'example{mode}: Dice on the MNI152 example: {scored}{overlap}'
    return (f'consistency{mode}: median volume spread {_percent(m["median_spread"])} over '
            f'{m["cases"]} cases x {len(m["variants"])} variants (target <= 3 %)')


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(str(c)) for c in column) for column in zip(header, *rows)]
    line = lambda cells: '  '.join(str(c).ljust(w) if i == 0 else str(c).rjust(w)  # noqa: E731
                                   for i, (c, w) in enumerate(zip(cells, widths)))
    return [line(header), line(['-' * w for w in widths]), *(line(r) for r in rows)]


def format_result(result: dict) -> str:
    """The human table of a suite's result, ending with the headline."""
    suite, m = result['suite'], result['metrics']
    lines = [f'suite {suite}: weights {str(result["weights_sha256"])[:12]}, count {result["count"]}, '
             f'seed {result["seed"]}, device {result["device"]}, {result["seconds"]:.1f} s'
             + (f', programs {result["programs"]}' if 'programs' in result else ''), '']
    if suite == 'prompts':
        rows = [[c, e['n'], _percent(e['accuracy']), _percent(e['equivalent_accuracy']),
                 e['rejected'], e['refused'], e['unfinished']]
                for c, e in result['per_category'].items()]
        rows.append(['all', m['episodes'], _percent(m['accuracy']), _percent(m['equivalent_accuracy']),
                     m['sandbox_rejected'], m['false_refusals'], m['unfinished']])
        lines += _table(['category', 'n', 'exact', 'equivalent', 'rejected', 'refused', 'no stop'],
                        rows)
        r = result['refusal']
        lines += ['', f'refusal suite ({r["n"]} prompts): {r["refused"]} refused '
                      f'({r["refused_by_gate"]} by the gate, {r["refused_by_model"]} by the model), '
                      f'{r["outside_library"]} programs outside the library, {r["errors"]} errors']
        lines += _table(['kind', 'n', 'refused'],
                        [[k, e['n'], _percent(e['refused_fraction'])] for k, e in r['per_kind'].items()])
    elif suite in ('anatomy', 'lesions'):
        key = 'per_class' if suite == 'lesions' else 'per_target'
        rows = [[name, e['n'], _number(e['mean_dice'])] for name, e in result[key].items()]
        rows.append(['all', m['tasks'], _number(m['mean_dice'])])
        lines += _table(['class' if suite == 'lesions' else 'target', 'n', 'mean Dice'], rows)
        lines += ['', f'k* written {m["program_match"]}/{m["tasks"]}, refused {m["refused"]}, '
                      f'failed {m["failed"]}']
    elif suite == 'characterization':
        rows = [[c, e['n'], e['correct'], _percent(e['accuracy'])]
                for c, e in result['per_category'].items()]
        rows.append(['all', m['tasks'], m['correct'], _percent(m['accuracy'])])
        lines += _table(['category', 'n', 'correct', 'accuracy'], rows)
        lines += ['', f'mean lesion Dice {_number(m["mean_lesion_dice"])}; k* written '
                      f'{m["program_match"]}/{m["tasks"]}, refused {m["refused"]}, failed {m["failed"]}']
    elif suite == 'end-to-end':
        rows = [[c, e['n'], e['missing'], _percent(e['median_relative_error']),
                 _number(e['median_absolute_error']) + ' ' + '/'.join(e['units']),
                 _percent(e['within_5_percent'], 0), _number(e['mean_dice'])]
                for c, e in result['per_category'].items()]
        lines += _table(['category', 'n', 'missing', 'median rel. error', 'median abs. error',
                         '<= 5 %', 'mean Dice'], rows)
        lines += ['', f'k* written {m["program_match"]}/{m["tasks"]}, refused {m["refused"]}, '
                      f'failed {m["failed"]}']
    elif suite == 'example':
        rows = [[p, e['target'], _number(e['dice']) if e['dice'] is not None else '-',
                 _number(e.get('volume_ml'), 1), 'yes' if e['program_match'] else 'no']
                for p, e in result['per_prompt'].items()]
        lines += _table(['prompt', 'target', 'Dice', 'mask mL', 'k* written'], rows)
    elif suite == 'real':
        lines += _table(['scan', 'structure', 'mL', *REAL_ATLASES], real_rows(result))
    elif suite == 'paraphrases':
        lines += _table(PARAPHRASE_HEADER, paraphrase_rows(result))
    else:
        names = list(CONSISTENCY_VARIANTS)
        rows = [[case, _number(e['truth_volume'], 2), *(_number(e[n], 2) for n in names),
                 _percent(e['spread'])] for case, e in result['per_case'].items()]
        lines += _table(['case', 'truth mL', *names, 'spread'], rows)
    lines += ['', headline(result)]
    return '\n'.join(lines)


