"""The 17 task categories: what each needs, its prompt, its target program, its expected results.

Every category has a planner and a writer. The planner draws the category's variant and
parameters and says what case it needs (:class:`~vpcli.tasks.world.CaseRequest`). The
writer, given the synthesised case's :class:`~vpcli.tasks.world.CaseInfo`, picks the ROIs,
fills a template, writes the target program k* step by step, and returns a function that
computes the expected outputs and answer from the case's ground truth with the library's
own functions (so the oracle check compares k* run in the sandbox against the intended
computation on ground-truth masks).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import numpy as np

from vpcli.tasks.grammar import expand
from vpcli.tasks.ontology import AnatomyTarget, load_ontology
from vpcli.tasks.program import Name, Program, call
from vpcli.tasks.roi import (RoiPhrase, anatomy_phrase, lesion_description, lesion_phrase,
                             modality_words, shared_slots)
from vpcli.tasks.templates import CATEGORIES, load_templates
from vpcli.tasks.world import CaseInfo, CaseRequest, LesionInfo, ScanInfo
from vpcli.volumes import POST_CONTRAST

MRI_MODALITIES = ('T1w', 'T2w', 'FLAIR', 'PD', 'GRE')

#: how often an anatomical target of each kind is drawn (cortical parcels would dominate
#: a uniform draw over targets)
KIND_WEIGHTS = {'subcortical': 0.28, 'cortex': 0.2, 'lobe': 0.15, 'group': 0.15,
                'ventricle': 0.1, 'tissue': 0.06, 'territory': 0.06}

#: regions a lesion's lobe-level location is chosen among, in program order
LOCATION_REGIONS = tuple(f'{side} {key}' for side in ('left', 'right')
                         for key in ('frontal lobe', 'parietal lobe', 'temporal lobe',
                                     'occipital lobe', 'insular lobe', 'deep grey matter',
                                     'cerebellum')) + ('brainstem',)
#: region key -> the lesion's ``lobe`` descriptor value
REGION_LOBE = {'frontal lobe': 'frontal', 'parietal lobe': 'parietal', 'temporal lobe': 'temporal',
               'occipital lobe': 'occipital', 'insular lobe': 'insular',
               'deep grey matter': 'deep grey', 'cerebellum': 'cerebellar', 'brainstem': 'brainstem'}
#: regions a lesion's vascular territory is chosen among
TERRITORY_REGIONS = tuple(f'{side} {artery} territory' for side in ('left', 'right')
                          for artery in ('ACA', 'MCA', 'PCA'))

#: reference regions for relative volumes (must contain the part)
RELATIVE_REFERENCES = ('whole brain', 'intracranial volume', 'left cerebral hemisphere',
                       'right cerebral hemisphere', 'bilateral cerebral hemisphere')
#: reference tissues for intensity comparisons
INTENSITY_REFERENCES = ('left cerebral white matter', 'right cerebral white matter',
                        'bilateral cerebral white matter', 'bilateral cerebral cortex',
                        'left thalamus', 'right thalamus', 'bilateral putamen')

#: where prompts come from: the template table, or the paraphrase families of one split
PHRASINGS = ('templates', 'paraphrases-train', 'paraphrases-eval')

#: the margins (mm) cropping tasks may ask for
CROP_MARGINS_MM = (2, 5, 10, 15, 20)


@dataclasses.dataclass(frozen=True)
class TaskPlan:
    """A task before its case exists.

    Attributes:
        category: One of :data:`~vpcli.tasks.templates.CATEGORIES`.
        variant: Category-specific variant (``basic``, ``rate``, ``asymmetry``, ``bbox``...).
        request: The case it needs.
        params: Drawn parameters (``lesion``: target a lesion; ``axis``; ``margin_mm``...).
    """
    category: str
    variant: str
    request: CaseRequest
    params: dict


@dataclasses.dataclass(frozen=True)
class Expected:
    """Results k* must reproduce.

    Attributes:
        outputs: ``output`` name -> (value, unit), in call order.
        answer: The ``answer`` text, or None.
        masks: Program variable of each ``segment`` call -> its target text (a tuple of
            per-session masks when the case has two sessions).
        images: ``save`` name -> the expected image (a :class:`~vpcli.volumes.Scan`).
    """
    outputs: dict[str, tuple[Any, str]]
    answer: str | None
    masks: dict[str, str]
    images: dict[str, Any]


@dataclasses.dataclass(frozen=True)
class TaskDraft:
    """A written task: prompt, scans, program, and how to get its expected results.

    Attributes:
        category: Task category.
        variant: Its variant.
        prompt: The prompt text.
        scans: The input scans (what the agent's state lists).
        program: Target program k* (``# step N`` separated).
        segments: (variable, target text) of each ``segment`` call in program order.
        evaluate: Ground truth -> :class:`Expected`.
    """
    category: str
    variant: str
    prompt: str
    scans: tuple[ScanInfo, ...]
    program: str
    segments: tuple[tuple[str, str], ...]
    evaluate: Callable[[Any], Expected]


class Unwritable(Exception):
    """The case cannot serve the planned task (e.g. no lesion can be singled out)."""


def _choice(rng: np.random.Generator, options):
    options = list(options)
    return options[int(rng.integers(len(options)))]


def _mri_session(rng: np.random.Generator, allow_ct: bool = True) -> tuple[str, ...]:
    if allow_ct and rng.random() < 0.1:
        return ('CT',)
    count = 1 if rng.random() < 0.6 else 2
    picks = rng.choice(len(MRI_MODALITIES), size=count, replace=False)
    return tuple(MRI_MODALITIES[i] for i in picks)


def _lesion_count(rng: np.random.Generator) -> int:
    return int(_choice(rng, (1, 1, 1, 2, 2, 3)))


# -----------------------------------------------------------------------------
# the writer: shared machinery for all categories
# -----------------------------------------------------------------------------

class Writer:
    """Writes one task against one case: ROI choice, template filling, program text."""

    def __init__(self, plan: TaskPlan, case: CaseInfo, rng: np.random.Generator,
                 phrasing: str = 'templates'):
        if phrasing not in PHRASINGS:
            raise ValueError(f'phrasing {phrasing!r} is not one of {PHRASINGS}')
        self.plan = plan
        self.phrasing = phrasing
        self.case = case
        self.rng = rng
        self.ontology = load_ontology()
        self.templates = load_templates(plan.category)
        self.program = Program()
        self.bindings: dict[str, str] = {}
        self.segments: list[tuple[str, str]] = []

    # ----- ROI choice -----------------------------------------------------------------

    def anatomy(self, candidates: list[AnatomyTarget] | None = None,
                exclude: tuple[str, ...] = ()) -> AnatomyTarget:
        """Draw a present anatomical target (by kind weights unless ``candidates`` given)."""
        present = self.case.present
        if candidates is None:
            kinds = [k for k in KIND_WEIGHTS
                     if any(t.name in present and t.name not in exclude
                            for t in self.ontology.targets_of_kind(k))]
            if not kinds:
                raise Unwritable('no anatomical target is present in the case')
            weights = np.array([KIND_WEIGHTS[k] for k in kinds])
            kind = kinds[int(self.rng.choice(len(kinds), p=weights / weights.sum()))]
            candidates = self.ontology.targets_of_kind(kind)
        pool = [t for t in candidates if t.name in present and t.name not in exclude]
        if not pool:
            raise Unwritable('none of the candidate targets is present in the case')
        return _choice(self.rng, pool)

    def lesion(self, exclude_tags: tuple[str, ...] = (), need_tag: str | None = None,
               allow_every: bool = False) -> tuple[RoiPhrase, LesionInfo | None]:
        """Draw a lesion and a description that singles it out (or ``all ...`` of a class)."""
        lesions = self.case.lesions
        if not lesions:
            raise Unwritable('the case has no lesion')
        if allow_every and len(lesions) > 1 and self.rng.random() < 0.3:
            anchor = _choice(self.rng, lesions)
            class_key = _choice(self.rng, self.ontology.ancestors(anchor.class_key))
            return lesion_phrase(self.rng, class_key, {}, every=True), None
        order = [lesions[i] for i in self.rng.permutation(len(lesions))]
        for lesion in order:
            if need_tag and need_tag not in lesion.tags:
                continue
            description = lesion_description(self.rng, lesion, lesions, exclude_tags)
            if description is not None:
                return lesion_phrase(self.rng, *description), lesion
        raise Unwritable('no lesion of the case can be described unambiguously')

    def roi(self, lesion_exclude: tuple[str, ...] = (), allow_every: bool = True) -> RoiPhrase:
        """The task's main ROI: a lesion when the plan says so, else an anatomical target."""
        if self.plan.params.get('lesion'):
            phrase, _ = self.lesion(lesion_exclude, allow_every=allow_every)
            return phrase
        return anatomy_phrase(self.rng, self.anatomy())

    # ----- prompt -----------------------------------------------------------------------

    def bind_roi(self, phrase: RoiPhrase, slot: str = 'roi') -> None:
        self.bindings[slot] = phrase.text
        self.bindings[f'{slot}_bare'] = phrase.bare

    def bind_modality(self, scan: ScanInfo, session: list[ScanInfo]) -> None:
        """Bind ``{intensity}`` and ``{on_modality}`` for measurements on ``scan``."""
        self.bindings['intensity'] = '{ct_intensity}' if scan.modality == 'CT' else '{mri_intensity}'
        named = len({s.modality for s in session}) > 1 or self.rng.random() < 0.25
        if named:
            word = modality_words(self.rng, scan.modality)
            self.bindings['on_modality'] = _choice(
                self.rng, (f'on the {word}', f'on the {word} image', f'in the {word} scan',
                           f'on {word}'))
        else:
            self.bindings['on_modality'] = ''

    def prompt(self, **filters: str | None) -> str:
        """Fill a random template that fits the task, or (``phrasing`` ``paraphrases-*``) a
        phrasing of a paraphrase family of that split (:mod:`vpcli.tasks.paraphrase`)."""
        filters.setdefault('variant', self.plan.variant)
        if self.phrasing != 'templates':
            from vpcli.tasks.paraphrase import paraphrase_prompt
            return paraphrase_prompt(self.plan.category, filters, self.bindings,
                                     self.phrasing.split('-', 1)[1], self.rng)
        options = self.templates.matching(**filters)
        if not options:
            raise Unwritable(f'no {self.plan.category} template fits {filters}')
        template = _choice(self.rng, options)
        slots = {**shared_slots(), **self.templates.slots,
                 **{k: (v,) for k, v in self.bindings.items()}}
        return expand(template.text, slots, self.rng,
                      where=f'{self.plan.category} template {template.index}')

    # ----- program ----------------------------------------------------------------------

    def encode(self, scans: list[ScanInfo] | None = None) -> None:
        """Step: ``enc = encode(...)`` over ``scans`` (all scans by default)."""
        scans = list(self.case.scans) if scans is None else scans
        self.program.step().add(f'enc = {call("encode", *[Name(s.name) for s in scans])}')
        self.program.names.add('enc')
        self.program.step()

    def segment(self, target: str, variable: str | None = None) -> str:
        """``name = segment(enc, "target")`` in the current step; returns the variable."""
        name = self.program.name(variable or target)
        self.program.add(f'{name} = {call("segment", Name("enc"), target)}')
        self.segments.append((name, target))
        return name

    def step(self) -> None:
        self.program.step()

    def add(self, statement: str) -> None:
        self.program.add(statement)

    def draft(self, prompt: str, evaluate: Callable[[Any], Expected]) -> TaskDraft:
        return TaskDraft(self.plan.category, self.plan.variant, prompt, self.case.scans,
                         self.program.text(), tuple(self.segments), evaluate)


# -----------------------------------------------------------------------------
# ground-truth helpers used by the evaluate functions (library calls on true masks)
# -----------------------------------------------------------------------------

class _Library:
    """Lazy access to library functions (torch is imported only when evaluating)."""

    def __getattr__(self, name: str):
        from vpcli.library.registry import registry
        return registry()[name].func


LIB = _Library()


def _expected(segments, outputs=None, answer=None, images=None) -> Expected:
    """Expected results; ``masks`` maps each segment variable to its target text."""
    return Expected(outputs or {}, answer, {name: target for name, target in segments},
                    images or {})


# -----------------------------------------------------------------------------
# single-session measurement tasks
# -----------------------------------------------------------------------------

def _plan_single(category: str, rng: np.random.Generator, lesion_probability: float,
                 variant: str = 'basic', allow_ct: bool = True, **params) -> TaskPlan:
    lesion = bool(rng.random() < lesion_probability)
    request = CaseRequest(sessions=(_mri_session(rng, allow_ct),),
                          lesions=_lesion_count(rng) if lesion else int(rng.random() < 0.2))
    return TaskPlan(category, variant, request, dict(params, lesion=lesion))


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


def plan_volume(rng):
    return _plan_single('volume', rng, 0.35)


def write_volume(w: Writer) -> TaskDraft:
    phrase = w.roi()
    w.bind_roi(phrase)
    prompt = w.prompt()
    w.encode()
    mask = w.segment(phrase.canonical, 'roi')
    w.step()
    w.add(f'v = volume({mask})')
    w.add('output("volume", v, "mL")')
    segments = list(w.segments)

    def evaluate(gt):
        return _expected(segments, {'volume': (LIB.volume(gt.mask(phrase.canonical, 0)), 'mL')})
    return w.draft(prompt, evaluate)


def plan_center_of_mass(rng):
    return _plan_single('center_of_mass', rng, 0.35)


def write_center_of_mass(w: Writer) -> TaskDraft:
    phrase = w.roi()
    w.bind_roi(phrase)
    prompt = w.prompt()
    w.encode()
    mask = w.segment(phrase.canonical, 'roi')
    w.step()
    w.add(f'c = center_of_mass({mask})')
    w.add('output("center_of_mass", c, "mm")')
    segments = list(w.segments)

    def evaluate(gt):
        value = LIB.center_of_mass(gt.mask(phrase.canonical, 0))
        return _expected(segments, {'center_of_mass': (value, 'mm')})
    return w.draft(prompt, evaluate)


def plan_extent(rng):
    variant = 'bbox' if rng.random() < 0.25 else 'axis'
    return _plan_single('extent', rng, 0.35, variant, axis=_choice(rng, ('lr', 'ap', 'si')))


def _bind_axis(w: Writer, axis: str) -> None:
    w.bindings['axis_noun'] = '{extent_' + axis + '}'
    w.bindings['axis_word'] = '{axisword_' + axis + '}'


def write_extent(w: Writer) -> TaskDraft:
    phrase = w.roi()
    w.bind_roi(phrase)
    axis = w.plan.params['axis']
    if w.plan.variant == 'axis':
        _bind_axis(w, axis)
        prompt = w.prompt(axis=axis)
    else:
        prompt = w.prompt()
    w.encode()
    mask = w.segment(phrase.canonical, 'roi')
    w.step()
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


def _measured_scan(w: Writer, targets: list[str], session: int = 0) -> ScanInfo:
    """The scan a measurement is made on: the planned one when every target still has
    voxels there after resampling, else the session's first scan (the mask's own grid)."""
    scans = w.case.sessions[session]
    chosen = scans[w.plan.params.get('scan_index', 0) % len(scans)]
    if all(w.case.can_measure(t, chosen.name) for t in targets):
        return chosen
    return scans[0]


def _scan_variable(w: Writer, scan: ScanInfo, suffix: str = '', session: int = 0) -> str:
    """The name the program measures ``scan`` by. When the prompt names the modality, the
    measuring step first finds the scan of that modality (``flair = find_scan("FLAIR")``;
    ``find_scan("FLAIR", 1)`` in the second session): the program says which modality it
    measures, and the library, not the model, finds which scan has it. Otherwise the
    scan's own name."""
    if not w.bindings.get('on_modality'):
        return scan.name
    modality = scan.modality.split(' ')[0]
    name = w.program.name(modality + suffix)
    w.add(f'{name} = find_scan("{modality}"' + (f', {session})' if session else ')'))
    return name


def _mask_on(w: Writer, mask: str, scan: ScanInfo, session_scans: list[ScanInfo],
             variable: str | None = None) -> str:
    """The mask variable to use with ``scan``: resampled when it is not the session's
    first, and always when the program found the scan by modality (``variable`` from
    :func:`_scan_variable`; resampling onto the mask's own grid changes nothing)."""
    found = variable is not None and variable != scan.name
    if scan.name == session_scans[0].name and not found:
        return mask
    variable = variable or scan.name
    name = w.program.name(f'{mask}_{variable}')
    w.add(f'{name} = resample_mask({mask}, {variable})')
    return name


def _intensity_unit(scan: ScanInfo) -> str:
    return 'HU' if scan.modality == 'CT' else 'image units'


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
    w.encode()
    mask = w.segment(phrase.canonical, 'roi')
    w.step()
    measured_scan = _scan_variable(w, scan)
    measured = _mask_on(w, mask, scan, session, measured_scan)
    w.add(f'i = mean_intensity({measured_scan}, {measured})')
    unit = _intensity_unit(scan)
    w.add(f'output("mean_intensity", i, "{unit}")')
    segments = list(w.segments)

    def evaluate(gt):
        m = gt.mask(phrase.canonical, 0)
        if scan.name != session[0].name:
            m = LIB.resample_mask(m, gt.scan(scan.name))
        value = LIB.mean_intensity(gt.scan(scan.name), m)
        return _expected(segments, {'mean_intensity': (value, unit)})
    return w.draft(prompt, evaluate)


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
            m = gt.mask(target, 0)
            if scan.name != session[0].name:
                m = LIB.resample_mask(m, gt.scan(scan.name))
            values.append(LIB.mean_intensity(gt.scan(scan.name), m))
        a, b = values
        return _expected(segments, {
            'mean_intensity': (a, unit), 'reference_mean_intensity': (b, unit),
            'intensity_ratio': (LIB.ratio(a, b), 'ratio'),
            'intensity_difference': (LIB.difference(b, a), unit)})
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
        prompt = w.prompt()
        w.encode()
        lv = w.segment(left.name, 'left')
        rv = w.segment(right.name, 'right')
        w.step()
        w.add(f'v_left = volume({lv})')
        w.add(f'v_right = volume({rv})')
        w.add('output("left_volume", v_left, "mL")')
        w.add('output("right_volume", v_right, "mL")')
        w.add('output("asymmetry", asymmetry(v_left, v_right), "%")')
        segments = list(w.segments)

        def evaluate(gt):
            a = LIB.volume(gt.mask(left.name, 0))
            b = LIB.volume(gt.mask(right.name, 0))
            return _expected(segments, {'left_volume': (a, 'mL'), 'right_volume': (b, 'mL'),
                                               'asymmetry': (LIB.asymmetry(a, b), '%')})
        return w.draft(prompt, evaluate)
    first = w.anatomy()
    second = w.anatomy(exclude=(first.name,))
    w.bind_roi(anatomy_phrase(w.rng, first))
    w.bind_roi(anatomy_phrase(w.rng, second), 'roi2')
    prompt = w.prompt()
    w.encode()
    a_name = w.segment(first.name, 'roi')
    b_name = w.segment(second.name, 'roi2')
    w.step()
    w.add(f'v_a = volume({a_name})')
    w.add(f'v_b = volume({b_name})')
    w.add('output("volume", v_a, "mL")')
    w.add('output("second_volume", v_b, "mL")')
    w.add('output("volume_difference", difference(v_b, v_a), "mL")')
    w.add('output("volume_ratio", ratio(v_a, v_b), "ratio")')
    segments = list(w.segments)

    def evaluate(gt):
        a = LIB.volume(gt.mask(first.name, 0))
        b = LIB.volume(gt.mask(second.name, 0))
        return _expected(segments, {'volume': (a, 'mL'), 'second_volume': (b, 'mL'),
                                           'volume_difference': (LIB.difference(b, a), 'mL'),
                                           'volume_ratio': (LIB.ratio(a, b), 'ratio')})
    return w.draft(prompt, evaluate)


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
    prompt = w.prompt()
    w.encode()
    part_name = w.segment(phrase.canonical, 'roi')
    ref_name = w.segment(reference.name, 'reference')
    w.step()
    w.add(f'v_part = volume({part_name})')
    w.add(f'v_reference = volume({ref_name})')
    w.add('output("volume", v_part, "mL")')
    w.add('output("reference_volume", v_reference, "mL")')
    w.add('output("percent_of_reference", ratio(v_part, v_reference) * 100, "%")')
    segments = list(w.segments)

    def evaluate(gt):
        a = LIB.volume(gt.mask(phrase.canonical, 0))
        b = LIB.volume(gt.mask(reference.name, 0))
        return _expected(segments, {'volume': (a, 'mL'), 'reference_volume': (b, 'mL'),
                                           'percent_of_reference': (LIB.ratio(a, b) * 100, '%')})
    return w.draft(prompt, evaluate)


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
    w.encode()
    mask = w.segment(phrase.canonical, 'roi')
    w.step()
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
    w.encode()
    mask = w.segment(phrase.canonical, 'roi')
    w.step()
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
    w.encode()
    mask = w.segment(phrase.canonical, 'roi')
    w.step()
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
            m = gt.mask(phrase.canonical, session_index)
            if scan.name != sessions[session_index][0].name:
                m = LIB.resample_mask(m, gt.scan(scan.name))
            values.append(LIB.mean_intensity(gt.scan(scan.name), m))
        a, b = values
        return _expected(segments, {
            'intensity_before': (a, unit), 'intensity_after': (b, unit),
            'intensity_change': (LIB.difference(a, b), unit),
            'percent_change': (LIB.percent_change(a, b), '%')})
    return w.draft(prompt, evaluate)


# -----------------------------------------------------------------------------
# characterization tasks (lesions; the answer is computed from measured evidence)
# -----------------------------------------------------------------------------

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
    w.encode()
    lesion = w.segment(phrase.canonical, 'lesion')
    w.step()
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


def plan_enhancement(rng):
    request = CaseRequest(sessions=(('T1w', POST_CONTRAST),), lesions=_lesion_count(rng))
    return TaskPlan('enhancement', 'basic', request, {'lesion': True})


def write_enhancement(w: Writer) -> TaskDraft:
    phrase, _ = w.lesion(exclude_tags=('enhancement',), need_tag='enhancement')
    w.bind_roi(phrase)
    prompt = w.prompt()
    pre, post = w.case.sessions[0][0], w.case.sessions[0][1]
    w.encode()
    lesion = w.segment(phrase.canonical, 'lesion')
    w.step()
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
    phrase, _ = w.lesion(exclude_tags=('diffusion',), need_tag='diffusion')
    w.bind_roi(phrase)
    prompt = w.prompt()
    dwi, adc = w.case.sessions[0][0], w.case.sessions[0][1]
    w.encode()
    lesion = w.segment(phrase.canonical, 'lesion')
    w.step()
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
    w.encode()
    lesion = w.segment(phrase.canonical, 'lesion')
    w.step()
    measured_scan = _scan_variable(w, scan)
    measured = _mask_on(w, lesion, scan, session, measured_scan)
    w.add(f'r = signal_ratio({measured_scan}, {measured})')
    w.add('output("signal_ratio", r, "ratio")')
    w.add('answer(signal_class(r))')
    segments = list(w.segments)

    def evaluate(gt):
        m = gt.mask(phrase.canonical, 0)
        if scan.name != session[0].name:
            m = LIB.resample_mask(m, gt.scan(scan.name))
        r = LIB.signal_ratio(gt.scan(scan.name), m)
        return _expected(segments, {'signal_ratio': (r, 'ratio')}, answer=LIB.signal_class(r))
    return w.draft(prompt, evaluate)


# -----------------------------------------------------------------------------
# image edits
# -----------------------------------------------------------------------------

def plan_cropping(rng):
    variant = 'margin' if rng.random() < 0.5 else 'tight'
    return _plan_single('cropping', rng, 0.35, variant, margin_mm=int(_choice(rng, CROP_MARGINS_MM)))


def write_cropping(w: Writer) -> TaskDraft:
    phrase = w.roi()
    w.bind_roi(phrase)
    margin = w.plan.params['margin_mm'] if w.plan.variant == 'margin' else 0
    w.bindings['margin'] = _choice(w.rng, (f'{margin} mm', f'{margin}mm', f'{margin} millimeters'))
    prompt = w.prompt()
    scan = w.case.sessions[0][0]
    w.encode()
    mask = w.segment(phrase.canonical, 'roi')
    w.step()
    if margin:
        w.add(f'cropped = crop({scan.name}, {mask}, {margin})')
    else:
        w.add(f'cropped = crop({scan.name}, {mask})')
    w.add('save(cropped, "cropped")')
    segments = list(w.segments)

    def evaluate(gt):
        image = LIB.crop(gt.scan(scan.name), gt.mask(phrase.canonical, 0), float(margin))
        return _expected(segments, images={'cropped': image})
    return w.draft(prompt, evaluate)


def plan_tissue_removal(rng):
    variant = 'keep' if rng.random() < 0.4 else 'remove'
    return _plan_single('tissue_removal', rng, 0.35, variant)


def write_tissue_removal(w: Writer) -> TaskDraft:
    phrase = w.roi()
    w.bind_roi(phrase)
    prompt = w.prompt()
    scan = w.case.sessions[0][0]
    function, name = ('remove', 'removed') if w.plan.variant == 'remove' else ('extract', 'extracted')
    w.encode()
    mask = w.segment(phrase.canonical, 'roi')
    w.step()
    w.add(f'{name} = {function}({scan.name}, {mask})')
    w.add(f'save({name}, "{name}")')
    segments = list(w.segments)

    def evaluate(gt):
        image = getattr(LIB, function)(gt.scan(scan.name), gt.mask(phrase.canonical, 0))
        return _expected(segments, images={name: image})
    return w.draft(prompt, evaluate)


#: category -> (planner, writer)
TASKS: dict[str, tuple[Callable, Callable]] = {
    category: (globals()[f'plan_{category}'], globals()[f'write_{category}'])
    for category in CATEGORIES
}
