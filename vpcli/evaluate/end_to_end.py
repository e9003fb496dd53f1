"""The ``end-to-end`` suite: volume, extent and intensity outputs against the ground truth."""

from __future__ import annotations

import math
import statistics

from vpcli.evaluate.characterization import _run_suite_task
from vpcli.evaluate.common import (DEFAULT_COUNTS, END_TO_END_CATEGORIES, Progress, _fraction,
                                   _mean, _no_progress)
from vpcli.evaluate.segmentation import _status_counts
from vpcli.evaluate.tasks import TaskRun, _check_programs, _task_line, score_masks


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
