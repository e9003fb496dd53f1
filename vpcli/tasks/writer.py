"""Shared machinery of the task categories: planning draws, the :class:`Writer`, ground truth.

Every category of :mod:`vpcli.tasks.categories` plans with the draws here (modalities,
lesion counts, :func:`_plan_single`) and writes against its case with a :class:`Writer`
(ROI choice, template filling, program text). Expected results are computed with the
library's own functions through :data:`LIB` on ground-truth masks. The helpers at the end
write program steps that several categories share (axis words, the scan a measurement is
made on, masks resampled onto it).
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from vpcli.tasks.drafts import Expected, TaskDraft, TaskPlan, Unwritable
from vpcli.tasks.ontology import AnatomyTarget, load_ontology
from vpcli.tasks.roi import (RoiPhrase, anatomy_phrase, is_plural, lesion_description, lesion_phrase,
                             modality_words, shared_slots)
from vpcli.tasks.slot_expansion import expand
from vpcli.tasks.target_program import Name, Program, call
from vpcli.tasks.templates import load_templates
from vpcli.tasks.world import CaseInfo, CaseRequest, LesionInfo, ScanInfo

MRI_MODALITIES = ('T1w', 'T2w', 'FLAIR', 'PD', 'GRE')

#: how often an anatomical target of each kind is drawn (cortical parcels would dominate
#: a uniform draw over targets)
KIND_WEIGHTS = {'subcortical': 0.28, 'cortex': 0.2, 'lobe': 0.15, 'group': 0.15,
                'ventricle': 0.1, 'tissue': 0.06, 'territory': 0.06}

#: where prompts come from: the template table, or the paraphrase families of one split
PHRASINGS = ('templates', 'paraphrases-train', 'paraphrases-eval')


# -----------------------------------------------------------------------------
# planning draws shared by the categories
# -----------------------------------------------------------------------------

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


def _plan_single(category: str, rng: np.random.Generator, lesion_probability: float,
                 variant: str = 'basic', allow_ct: bool = True, **params) -> TaskPlan:
    lesion = bool(rng.random() < lesion_probability)
    request = CaseRequest(sessions=(_mri_session(rng, allow_ct),),
                          lesions=_lesion_count(rng) if lesion else int(rng.random() < 0.2))
    return TaskPlan(category, variant, request, dict(params, lesion=lesion))


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
        self.bindings[f'{slot}_is'] = 'are' if is_plural(phrase.text) else 'is'

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

    def encode_and_segment(self, target: str, variable: str) -> str:
        """Steps: ``enc = encode(...)`` over all scans, then ``name = segment(enc, "target")``;
        opens the next step (the measurement) and returns the mask variable."""
        self.encode()
        name = self.segment(target, variable)
        self.step()
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


def _true_mask_on(gt, target: str, scan: ScanInfo, session_scans: list[ScanInfo],
                  session: int = 0):
    """The ground-truth mask of ``target`` in ``session`` to measure ``scan`` with: resampled
    onto the scan when it is not the session's first (the true masks' own grid)."""
    mask = gt.mask(target, session)
    if scan.name != session_scans[0].name:
        mask = LIB.resample_mask(mask, gt.scan(scan.name))
    return mask


# -----------------------------------------------------------------------------
# program-writing helpers shared by several categories
# -----------------------------------------------------------------------------

def _bind_axis(w: Writer, axis: str) -> None:
    w.bindings['axis_noun'] = '{extent_' + axis + '}'
    w.bindings['axis_word'] = '{axisword_' + axis + '}'


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
