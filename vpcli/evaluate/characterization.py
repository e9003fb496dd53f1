"""The ``characterization`` suite: location, signal, enhancement and diffusion answers."""

from __future__ import annotations

from typing import Sequence

from vpcli.evaluate.common import (CHARACTERIZATION_CATEGORIES, DEFAULT_COUNTS, Progress,
                                   _fraction, _mean, _no_progress)
from vpcli.evaluate.segmentation import _status_counts
from vpcli.evaluate.tasks import _check_programs, _draw_task, _task_line, run_task, score_masks


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
