"""The ``consistency`` suite: one volume prompt on a scan resampled and re-oriented."""

from __future__ import annotations

import dataclasses
import math
import statistics

from vpcli.evaluate.common import (CONSISTENCY_VARIANTS, DEFAULT_COUNTS, Progress, _fraction,
                                   _no_progress)
from vpcli.evaluate.end_to_end import _components, _median_with_missing, _run_outputs
from vpcli.evaluate.tasks import _check_programs, _draw_task, _task_line, run_task, score_masks


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
