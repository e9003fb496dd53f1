"""Lesion characterization categories: location, enhancement, diffusion, signal intensity.

The answer is computed from measured evidence (overlaps with regions, signal ratios), the
way a radiologist would justify it. Each category has a planner (``plan_X``) and a writer
(``write_X``); see :mod:`vpcli.tasks.categories`.
"""

from __future__ import annotations

from vpcli.library.lesion_choice import LOCATION_REGIONS, TERRITORY_REGIONS
from vpcli.tasks.drafts import TaskDraft, TaskPlan
from vpcli.tasks.roi import RoiPhrase
from vpcli.tasks.world import CaseRequest
from vpcli.tasks.writer import (LIB, Writer, _expected, _lesion_count, _mask_on, _measured_scan,
                                _mri_session, _scan_variable, _true_mask_on)
from vpcli.volumes import POST_CONTRAST


def plan_location(rng):
    variant = 'territory' if rng.random() < 0.35 else 'lobe'
    request = CaseRequest(sessions=(_mri_session(rng, allow_ct=False),), lesions=_lesion_count(rng))
    return TaskPlan('location', variant, request, {'lesion': True})


def write_location(w: Writer) -> TaskDraft:
    need = 'lobe' if w.plan.variant == 'lobe' else 'territory'
    phrase, _ = w.lesion(exclude_tags=('side', 'lobe', 'territory'), need_tag=need)
    w.bind_roi(phrase)
    prompt = w.prompt()
    regions = LOCATION_REGIONS if w.plan.variant == 'lobe' else TERRITORY_REGIONS
    lesion = w.encode_and_segment(phrase.canonical, 'lesion')
    region_names = [w.segment(region) for region in regions]
    w.step()
    w.add(f'where = location({lesion}, {", ".join(region_names)})')
    w.add('answer(where)')
    segments = list(w.segments)

    def evaluate(gt):
        mask = gt.mask(phrase.canonical, 0)
        answer = LIB.location(mask, *[gt.mask(r, 0) for r in regions])
        return _expected(segments, answer=answer)
    return w.draft(prompt, evaluate)


def _segment_tagged_lesion(w: Writer, tag: str) -> tuple[RoiPhrase, str, str]:
    """Single out a lesion that has a ``tag`` descriptor without naming it (the task asks
    for it), fill the prompt and segment the lesion; returns (phrase, prompt, mask variable)."""
    phrase, _ = w.lesion(exclude_tags=(tag,), need_tag=tag)
    w.bind_roi(phrase)
    prompt = w.prompt()
    return phrase, prompt, w.encode_and_segment(phrase.canonical, 'lesion')


def plan_enhancement(rng):
    request = CaseRequest(sessions=(('T1w', POST_CONTRAST),), lesions=_lesion_count(rng))
    return TaskPlan('enhancement', 'basic', request, {'lesion': True})


def write_enhancement(w: Writer) -> TaskDraft:
    phrase, prompt, lesion = _segment_tagged_lesion(w, 'enhancement')
    pre, post = w.case.sessions[0][0], w.case.sessions[0][1]
    w.add(f'r = enhancement_ratio({post.name}, {pre.name}, {lesion})')
    w.add('output("enhancement_ratio", r, "ratio")')
    w.add('answer(enhancement_class(r))')
    segments = list(w.segments)

    def evaluate(gt):
        r = LIB.enhancement_ratio(gt.scan(post.name), gt.scan(pre.name), gt.mask(phrase.canonical, 0))
        return _expected(segments, {'enhancement_ratio': (r, 'ratio')},
                         answer=LIB.enhancement_class(r))
    return w.draft(prompt, evaluate)


def plan_diffusion(rng):
    request = CaseRequest(sessions=(('DWI', 'ADC'),), lesions=_lesion_count(rng))
    return TaskPlan('diffusion', 'basic', request, {'lesion': True})


def write_diffusion(w: Writer) -> TaskDraft:
    phrase, prompt, lesion = _segment_tagged_lesion(w, 'diffusion')
    dwi, adc = w.case.sessions[0][0], w.case.sessions[0][1]
    w.add(f'dwi_ratio = signal_ratio({dwi.name}, {lesion})')
    w.add(f'adc_ratio = signal_ratio({adc.name}, {lesion})')
    w.add('output("dwi_signal_ratio", dwi_ratio, "ratio")')
    w.add('output("adc_signal_ratio", adc_ratio, "ratio")')
    w.add('answer(diffusion_class(dwi_ratio, adc_ratio))')
    segments = list(w.segments)

    def evaluate(gt):
        mask = gt.mask(phrase.canonical, 0)
        d = LIB.signal_ratio(gt.scan(dwi.name), mask)
        a = LIB.signal_ratio(gt.scan(adc.name), mask)
        return _expected(segments, {'dwi_signal_ratio': (d, 'ratio'),
                                           'adc_signal_ratio': (a, 'ratio')},
                         answer=LIB.diffusion_class(d, a))
    return w.draft(prompt, evaluate)


def plan_signal_intensity(rng):
    request = CaseRequest(sessions=(_mri_session(rng, allow_ct=False),), lesions=_lesion_count(rng))
    return TaskPlan('signal_intensity', 'basic', request,
                    {'lesion': True, 'scan_index': int(rng.integers(2))})


def write_signal_intensity(w: Writer) -> TaskDraft:
    phrase, _ = w.lesion(exclude_tags=('signal',))
    w.bind_roi(phrase)
    session = w.case.sessions[0]
    scan = _measured_scan(w, [phrase.canonical])
    w.bind_modality(scan, session)
    prompt = w.prompt(modality='mri')
    lesion = w.encode_and_segment(phrase.canonical, 'lesion')
    measured_scan = _scan_variable(w, scan)
    measured = _mask_on(w, lesion, scan, session, measured_scan)
    w.add(f'r = signal_ratio({measured_scan}, {measured})')
    w.add('output("signal_ratio", r, "ratio")')
    w.add('answer(signal_class(r))')
    segments = list(w.segments)

    def evaluate(gt):
        m = _true_mask_on(gt, phrase.canonical, scan, session)
        r = LIB.signal_ratio(gt.scan(scan.name), m)
        return _expected(segments, {'signal_ratio': (r, 'ratio')}, answer=LIB.signal_class(r))
    return w.draft(prompt, evaluate)
