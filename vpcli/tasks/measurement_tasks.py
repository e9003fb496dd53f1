"""Single-session measurement categories: segmentation, volume, center of mass, extent, intensity.

Each category has a planner (``plan_X``) and a writer (``write_X``); see
:mod:`vpcli.tasks.categories`.
"""

from __future__ import annotations

import dataclasses

from vpcli.tasks.drafts import TaskDraft
from vpcli.tasks.writer import (LIB, Writer, _bind_axis, _choice, _expected, _intensity_unit,
                                _mask_on, _measured_scan, _plan_single, _scan_variable,
                                _true_mask_on)


def plan_segmentation(rng):
    return _plan_single('segmentation', rng, 0.35)


def write_segmentation(w: Writer) -> TaskDraft:
    phrase = w.roi()
    w.bind_roi(phrase)
    prompt = w.prompt()
    w.encode()
    w.segment(phrase.canonical, 'roi')
    segments = list(w.segments)
    return w.draft(prompt, lambda gt: _expected(segments))


def _write_roi_measurement(w: Writer, function: str, variable: str, output: str,
                           unit: str) -> TaskDraft:
    """A task that measures one ROI with one library ``function`` of its mask:
    ``variable = function(mask)`` and ``output("output", variable, "unit")``."""
    phrase = w.roi()
    w.bind_roi(phrase)
    prompt = w.prompt()
    mask = w.encode_and_segment(phrase.canonical, 'roi')
    w.add(f'{variable} = {function}({mask})')
    w.add(f'output("{output}", {variable}, "{unit}")')
    segments = list(w.segments)

    def evaluate(gt):
        value = getattr(LIB, function)(gt.mask(phrase.canonical, 0))
        return _expected(segments, {output: (value, unit)})
    return w.draft(prompt, evaluate)


def plan_volume(rng):
    return _plan_single('volume', rng, 0.35)


def write_volume(w: Writer) -> TaskDraft:
    return _write_roi_measurement(w, 'volume', 'v', 'volume', 'mL')


def plan_center_of_mass(rng):
    return _plan_single('center_of_mass', rng, 0.35)


def write_center_of_mass(w: Writer) -> TaskDraft:
    return _write_roi_measurement(w, 'center_of_mass', 'c', 'center_of_mass', 'mm')


def plan_extent(rng):
    variant = 'bbox' if rng.random() < 0.25 else 'axis'
    return _plan_single('extent', rng, 0.35, variant, axis=_choice(rng, ('lr', 'ap', 'si')))


def write_extent(w: Writer) -> TaskDraft:
    phrase = w.roi()
    w.bind_roi(phrase)
    axis = w.plan.params['axis']
    if w.plan.variant == 'axis':
        _bind_axis(w, axis)
        prompt = w.prompt(axis=axis)
    else:
        prompt = w.prompt()
    mask = w.encode_and_segment(phrase.canonical, 'roi')
    segments = list(w.segments)
    if w.plan.variant == 'axis':
        name = f'extent_{axis}'
        w.add(f'e = extent({mask}, "{axis}")')
        w.add(f'output("{name}", e, "mm")')

        def evaluate(gt):
            return _expected(segments,
                             {name: (LIB.extent(gt.mask(phrase.canonical, 0), axis), 'mm')})
    else:
        w.add(f'b = bbox({mask})')
        w.add('output("bounding_box", b, "mm")')

        def evaluate(gt):
            return _expected(segments,
                             {'bounding_box': (LIB.bbox(gt.mask(phrase.canonical, 0)), 'mm')})
    return w.draft(prompt, evaluate)


def plan_intensity(rng):
    plan = _plan_single('intensity', rng, 0.4)
    return dataclasses.replace(plan, params=dict(plan.params, scan_index=int(rng.integers(2))))


def write_intensity(w: Writer) -> TaskDraft:
    phrase = w.roi()
    w.bind_roi(phrase)
    session = w.case.sessions[0]
    scan = _measured_scan(w, [phrase.canonical])
    w.bind_modality(scan, session)
    prompt = w.prompt(modality='ct' if scan.modality == 'CT' else 'mri')
    mask = w.encode_and_segment(phrase.canonical, 'roi')
    measured_scan = _scan_variable(w, scan)
    measured = _mask_on(w, mask, scan, session, measured_scan)
    w.add(f'i = mean_intensity({measured_scan}, {measured})')
    unit = _intensity_unit(scan)
    w.add(f'output("mean_intensity", i, "{unit}")')
    segments = list(w.segments)

    def evaluate(gt):
        m = _true_mask_on(gt, phrase.canonical, scan, session)
        value = LIB.mean_intensity(gt.scan(scan.name), m)
        return _expected(segments, {'mean_intensity': (value, unit)})
    return w.draft(prompt, evaluate)
