"""The ``anatomy`` and ``lesions`` suites: Dice of the masks a program made."""

from __future__ import annotations

from typing import Sequence

from vpcli.evaluate.common import (ASEG_KINDS, DEFAULT_COUNTS, Progress, _mean, _median,
                                   _no_progress)
from vpcli.evaluate.tasks import (_check_programs, _draw_task, _qc_calibration, _task_line,
                                  run_task, score_masks)


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
