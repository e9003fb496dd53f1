"""Comparison categories: two ROIs in one session, or one ROI across two sessions.

In one session: ``intensity_comparison``, ``volume_comparison``, ``relative_volume``.
Longitudinal (two sessions with the same modalities): ``volume_change``,
``extent_change``, ``intensity_change``. Each category has a planner (``plan_X``) and a
writer (``write_X``); see :mod:`vpcli.tasks.categories`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import numpy as np

from vpcli.tasks.drafts import TaskDraft, TaskPlan, Unwritable
from vpcli.tasks.ontology import AnatomyTarget
from vpcli.tasks.roi import RoiPhrase, anatomy_phrase
from vpcli.tasks.world import CaseInfo, CaseRequest
from vpcli.tasks.writer import (LIB, Writer, _bind_axis, _choice, _expected, _intensity_unit,
                                _lesion_count, _mask_on, _measured_scan, _mri_session,
                                _plan_single, _scan_variable, _true_mask_on)

#: reference regions for relative volumes (must contain the part)
RELATIVE_REFERENCES = ('whole brain', 'intracranial volume', 'left cerebral hemisphere',
                       'right cerebral hemisphere', 'bilateral cerebral hemisphere')
#: reference tissues for intensity comparisons
INTENSITY_REFERENCES = ('left cerebral white matter', 'right cerebral white matter',
                        'bilateral cerebral white matter', 'bilateral cerebral cortex',
                        'left thalamus', 'right thalamus', 'bilateral putamen')


# -----------------------------------------------------------------------------
# two ROIs in one session
# -----------------------------------------------------------------------------

def plan_intensity_comparison(rng):
    plan = _plan_single('intensity_comparison', rng, 0.5)
    return dataclasses.replace(plan, params=dict(plan.params, scan_index=int(rng.integers(2))))


def write_intensity_comparison(w: Writer) -> TaskDraft:
    ontology = w.ontology
    if w.plan.params['lesion']:
        phrase, _ = w.lesion(allow_every=False)
        reference = w.anatomy([ontology.targets[n] for n in INTENSITY_REFERENCES])
    else:
        first = w.anatomy()
        phrase = anatomy_phrase(w.rng, first)
        reference = w.anatomy(exclude=(first.name,))
    reference_phrase = anatomy_phrase(w.rng, reference)
    w.bind_roi(phrase)
    w.bind_roi(reference_phrase, 'roi2')
    session = w.case.sessions[0]
    scan = _measured_scan(w, [phrase.canonical, reference.name])
    w.bind_modality(scan, session)
    prompt = w.prompt(modality='ct' if scan.modality == 'CT' else 'mri')
    w.encode()
    roi = w.segment(phrase.canonical, 'roi')
    ref = w.segment(reference.name, 'reference')
    w.step()
    measured_scan = _scan_variable(w, scan)
    roi_measured = _mask_on(w, roi, scan, session, measured_scan)
    ref_measured = _mask_on(w, ref, scan, session, measured_scan)
    unit = _intensity_unit(scan)
    w.add(f'i_roi = mean_intensity({measured_scan}, {roi_measured})')
    w.add(f'i_ref = mean_intensity({measured_scan}, {ref_measured})')
    w.add(f'output("mean_intensity", i_roi, "{unit}")')
    w.add(f'output("reference_mean_intensity", i_ref, "{unit}")')
    w.add('output("intensity_ratio", ratio(i_roi, i_ref), "ratio")')
    w.add('output("intensity_difference", difference(i_ref, i_roi), ' f'"{unit}")')
    segments = list(w.segments)

    def evaluate(gt):
        values = []
        for target in (phrase.canonical, reference.name):
            m = _true_mask_on(gt, target, scan, session)
            values.append(LIB.mean_intensity(gt.scan(scan.name), m))
        a, b = values
        return _expected(segments, {
            'mean_intensity': (a, unit), 'reference_mean_intensity': (b, unit),
            'intensity_ratio': (LIB.ratio(a, b), 'ratio'),
            'intensity_difference': (LIB.difference(b, a), unit)})
    return w.draft(prompt, evaluate)


def _volume_pair_draft(w: Writer, prompt: str, first: tuple[str, str, str, str],
                       second: tuple[str, str, str, str], derived: list[tuple[str, str, str]],
                       derive: Callable[[Any, Any], dict]) -> TaskDraft:
    """The draft of a task comparing the volumes of two targets in one session.

    ``first`` and ``second`` are (target, mask variable, volume variable, output name): both
    targets are segmented in one step, and in the next both volumes are measured and output
    (mL), then the ``derived`` outputs (output name, expression of the volume variables,
    unit). ``derive(a, b)`` gives the derived outputs' expected (value, unit), in that order,
    from the two true volumes.
    """
    w.encode()
    masks = [w.segment(target, mask) for target, mask, _, _ in (first, second)]
    w.step()
    for (_, _, volume, _), mask in zip((first, second), masks):
        w.add(f'{volume} = volume({mask})')
    for _, _, volume, output in (first, second):
        w.add(f'output("{output}", {volume}, "mL")')
    for output, expression, unit in derived:
        w.add(f'output("{output}", {expression}, "{unit}")')
    segments = list(w.segments)

    def evaluate(gt):
        a = LIB.volume(gt.mask(first[0], 0))
        b = LIB.volume(gt.mask(second[0], 0))
        return _expected(segments, {first[3]: (a, 'mL'), second[3]: (b, 'mL'), **derive(a, b)})
    return w.draft(prompt, evaluate)


def plan_volume_comparison(rng):
    variant = 'asymmetry' if rng.random() < 0.6 else 'pair'
    return _plan_single('volume_comparison', rng, 0.0, variant)


def write_volume_comparison(w: Writer) -> TaskDraft:
    ontology = w.ontology
    present = w.case.present
    if w.plan.variant == 'asymmetry':
        lefts = [t for t in ontology.targets.values()
                 if t.side == 'left' and t.name in present and t.counterpart in present]
        if not lefts:
            raise Unwritable('no bilateral structure is present on both sides')
        kinds = sorted({t.kind for t in lefts})
        kind = _choice(w.rng, kinds)
        left = _choice(w.rng, [t for t in lefts if t.kind == kind])
        right = ontology.targets[left.counterpart]
        bilateral = ontology.targets[f'bilateral {left.key}']
        # "the asymmetry of the hippocampi": the bilateral structure without side words
        term = _choice(w.rng, ((left.plural,) if left.plural else ()) + left.terms)
        w.bind_roi(RoiPhrase(_choice(w.rng, ('the ', '')) + term, term, bilateral.name))
        w.bindings['roi_key'] = _choice(w.rng, [left.plural or term for term in left.terms]
                                        if left.plural else left.terms)
        return _volume_pair_draft(
            w, w.prompt(), (left.name, 'left', 'v_left', 'left_volume'),
            (right.name, 'right', 'v_right', 'right_volume'),
            [('asymmetry', 'asymmetry(v_left, v_right)', '%')],
            lambda a, b: {'asymmetry': (LIB.asymmetry(a, b), '%')})
    first = w.anatomy()
    second = w.anatomy(exclude=(first.name,))
    w.bind_roi(anatomy_phrase(w.rng, first))
    w.bind_roi(anatomy_phrase(w.rng, second), 'roi2')
    return _volume_pair_draft(
        w, w.prompt(), (first.name, 'roi', 'v_a', 'volume'),
        (second.name, 'roi2', 'v_b', 'second_volume'),
        [('volume_difference', 'difference(v_b, v_a)', 'mL'),
         ('volume_ratio', 'ratio(v_a, v_b)', 'ratio')],
        lambda a, b: {'volume_difference': (LIB.difference(b, a), 'mL'),
                      'volume_ratio': (LIB.ratio(a, b), 'ratio')})


def plan_relative_volume(rng):
    return _plan_single('relative_volume', rng, 0.35)


def _contains(reference: AnatomyTarget, part: AnatomyTarget) -> bool:
    if not part.labels <= reference.labels:
        return False
    if part.white_matter:
        sides = ('Left', 'Right') if part.side in ('bilateral', 'midline') else (part.side.title(),)
        return all(f'{s}-Cerebral-White-Matter' in reference.labels for s in sides)
    return True


def write_relative_volume(w: Writer) -> TaskDraft:
    ontology = w.ontology
    if w.plan.params['lesion']:
        phrase, lesion = w.lesion(allow_every=True)
        options = ['whole brain', 'intracranial volume', 'bilateral cerebral hemisphere']
        if lesion is not None and lesion.tags.get('side') in ('left', 'right') \
                and lesion.tags.get('lobe') not in ('cerebellar', 'brainstem', None):
            options.append(f'{lesion.tags["side"]} cerebral hemisphere')
        reference = ontology.targets[_choice(w.rng, options)]
    else:
        for _ in range(20):
            part = w.anatomy()
            references = [ontology.targets[n] for n in RELATIVE_REFERENCES
                          if n != part.name and n in w.case.present
                          and _contains(ontology.targets[n], part)]
            if references:
                break
        else:
            raise Unwritable('no part/reference pair is present')
        phrase = anatomy_phrase(w.rng, part)
        reference = _choice(w.rng, references)
    w.bind_roi(phrase)
    w.bind_roi(anatomy_phrase(w.rng, reference), 'roi2')
    return _volume_pair_draft(
        w, w.prompt(), (phrase.canonical, 'roi', 'v_part', 'volume'),
        (reference.name, 'reference', 'v_reference', 'reference_volume'),
        [('percent_of_reference', 'ratio(v_part, v_reference) * 100', '%')],
        lambda a, b: {'percent_of_reference': (LIB.ratio(a, b) * 100, '%')})


# -----------------------------------------------------------------------------
# longitudinal tasks (two sessions)
# -----------------------------------------------------------------------------

#: anatomical target kinds that atrophy or enlarge in longitudinal cases
ATROPHY_KINDS = ('subcortical', 'tissue', 'lobe', 'group', 'cortex')
ENLARGEMENT_KINDS = ('ventricle',)


def _plan_longitudinal(category: str, rng: np.random.Generator, lesion_probability: float,
                       variant: str = 'basic', allow_ct: bool = False, **params) -> TaskPlan:
    lesion = bool(rng.random() < lesion_probability)
    session = _mri_session(rng, allow_ct)
    if lesion:
        change = _choice(rng, ('growth', 'shrinkage'))
    else:
        change = _choice(rng, ('atrophy', 'enlargement'))
    request = CaseRequest(sessions=(session, session),
                          lesions=_lesion_count(rng) if lesion else 0, change=change)
    return TaskPlan(category, variant, request, dict(params, lesion=lesion))


def _longitudinal_roi(w: Writer, exclude_tags: tuple[str, ...] = ()) -> RoiPhrase:
    if w.plan.params['lesion']:
        # size rank is measured in the first session only; growth may reorder lesions
        phrase, _ = w.lesion(exclude_tags + ('size',), allow_every=True)
        return phrase
    kinds = ENLARGEMENT_KINDS if w.case.change == 'enlargement' else ATROPHY_KINDS
    candidates = [t for t in w.ontology.targets.values() if t.kind in kinds]
    return anatomy_phrase(w.rng, w.anatomy(candidates))


def _direction(case: CaseInfo) -> str | None:
    return {'growth': 'growth', 'enlargement': 'growth', 'shrinkage': 'shrinkage',
            'atrophy': 'shrinkage'}.get(case.change or '')


def _direction_filter(w: Writer) -> str | None:
    """Use a direction-worded template only now and then, and only the matching direction
    (known for anatomy changes; a lesion's own change is not part of the case summary)."""
    if w.plan.params.get('lesion'):
        return None
    return _direction(w.case) if w.rng.random() < 0.3 else None


def plan_volume_change(rng):
    return _plan_longitudinal('volume_change', rng, 0.55, 'rate' if rng.random() < 0.2 else 'basic')


def write_volume_change(w: Writer) -> TaskDraft:
    phrase = _longitudinal_roi(w)
    w.bind_roi(phrase)
    direction = _direction_filter(w) if w.plan.variant == 'basic' else None
    prompt = w.prompt(direction=direction)
    first, second = w.case.sessions[0][0], w.case.sessions[1][0]
    mask = w.encode_and_segment(phrase.canonical, 'roi')
    w.add(f'v_before = volume({mask}[0])')
    w.add(f'v_after = volume({mask}[1])')
    w.add('output("volume_before", v_before, "mL")')
    w.add('output("volume_after", v_after, "mL")')
    w.add('output("volume_change", difference(v_before, v_after), "mL")')
    if w.plan.variant == 'rate':
        w.add(f'days = days_between({first.name}, {second.name})')
        w.add('output("volume_change_per_year", difference(v_before, v_after) / days * 365.25, '
              '"mL/year")')
    else:
        w.add('output("percent_change", percent_change(v_before, v_after), "%")')
    segments = list(w.segments)
    variant = w.plan.variant

    def evaluate(gt):
        a = LIB.volume(gt.mask(phrase.canonical, 0))
        b = LIB.volume(gt.mask(phrase.canonical, 1))
        outputs = {'volume_before': (a, 'mL'), 'volume_after': (b, 'mL'),
                   'volume_change': (LIB.difference(a, b), 'mL')}
        if variant == 'rate':
            days = LIB.days_between(gt.scan(first.name), gt.scan(second.name))
            outputs['volume_change_per_year'] = (LIB.difference(a, b) / days * 365.25, 'mL/year')
        else:
            outputs['percent_change'] = (LIB.percent_change(a, b), '%')
        return _expected(segments, outputs)
    return w.draft(prompt, evaluate)


def plan_extent_change(rng):
    return _plan_longitudinal('extent_change', rng, 0.55, 'basic',
                              axis=_choice(rng, ('lr', 'ap', 'si')))


def write_extent_change(w: Writer) -> TaskDraft:
    phrase = _longitudinal_roi(w)
    w.bind_roi(phrase)
    axis = w.plan.params['axis']
    _bind_axis(w, axis)
    prompt = w.prompt(axis=axis)
    mask = w.encode_and_segment(phrase.canonical, 'roi')
    w.add(f'e_before = extent({mask}[0], "{axis}")')
    w.add(f'e_after = extent({mask}[1], "{axis}")')
    w.add(f'output("extent_{axis}_before", e_before, "mm")')
    w.add(f'output("extent_{axis}_after", e_after, "mm")')
    w.add(f'output("extent_{axis}_change", difference(e_before, e_after), "mm")')
    segments = list(w.segments)

    def evaluate(gt):
        a = LIB.extent(gt.mask(phrase.canonical, 0), axis)
        b = LIB.extent(gt.mask(phrase.canonical, 1), axis)
        return _expected(segments, {f'extent_{axis}_before': (a, 'mm'),
                                           f'extent_{axis}_after': (b, 'mm'),
                                           f'extent_{axis}_change': (LIB.difference(a, b), 'mm')})
    return w.draft(prompt, evaluate)


def plan_intensity_change(rng):
    plan = _plan_longitudinal('intensity_change', rng, 0.55, allow_ct=True)
    return dataclasses.replace(plan, params=dict(plan.params, scan_index=int(rng.integers(2))))


def write_intensity_change(w: Writer) -> TaskDraft:
    phrase = _longitudinal_roi(w)
    w.bind_roi(phrase)
    sessions = w.case.sessions
    index = w.plan.params['scan_index'] % len(sessions[0])
    scans = [sessions[0][index], sessions[1][index]]
    if not all(w.case.can_measure(phrase.canonical, s.name) for s in scans):
        scans = [sessions[0][0], sessions[1][0]]
    w.bind_modality(scans[0], sessions[0])
    prompt = w.prompt(modality='ct' if scans[0].modality == 'CT' else 'mri')
    mask = w.encode_and_segment(phrase.canonical, 'roi')
    unit = _intensity_unit(scans[0])
    named = [_scan_variable(w, scan, suffix, index)
             for index, (scan, suffix) in enumerate(zip(scans, ('_before', '_after')))]
    measured = []
    for session_index, (scan, variable) in enumerate(zip(scans, named)):
        name = w.program.name(f'roi_{session_index}')
        if scan.name == sessions[session_index][0].name and variable == scan.name:
            w.add(f'{name} = {mask}[{session_index}]')
        else:
            w.add(f'{name} = resample_mask({mask}[{session_index}], {variable})')
        measured.append(name)
    w.add(f'i_before = mean_intensity({named[0]}, {measured[0]})')
    w.add(f'i_after = mean_intensity({named[1]}, {measured[1]})')
    w.add(f'output("intensity_before", i_before, "{unit}")')
    w.add(f'output("intensity_after", i_after, "{unit}")')
    w.add(f'output("intensity_change", difference(i_before, i_after), "{unit}")')
    w.add('output("percent_change", percent_change(i_before, i_after), "%")')
    segments = list(w.segments)

    def evaluate(gt):
        values = []
        for session_index, scan in enumerate(scans):
            m = _true_mask_on(gt, phrase.canonical, scan, sessions[session_index], session_index)
            values.append(LIB.mean_intensity(gt.scan(scan.name), m))
        a, b = values
        return _expected(segments, {
            'intensity_before': (a, unit), 'intensity_after': (b, unit),
            'intensity_change': (LIB.difference(a, b), unit),
            'percent_change': (LIB.percent_change(a, b), '%')})
    return w.draft(prompt, evaluate)
