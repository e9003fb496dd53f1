"""Image-editing categories: cropping to an ROI, and removing or keeping an ROI's tissue.

The expected results are images (``save`` calls). Each category has a planner
(``plan_X``) and a writer (``write_X``); see :mod:`vpcli.tasks.categories`.
"""

from __future__ import annotations

from vpcli.tasks.drafts import TaskDraft, Unwritable
from vpcli.tasks.roi import anatomy_phrase
from vpcli.tasks.writer import LIB, Writer, _choice, _expected, _plan_single

#: the margins (mm) cropping tasks may ask for
CROP_MARGINS_MM = (2, 5, 10, 15, 20)


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
    mask = w.encode_and_segment(phrase.canonical, 'roi')
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


#: the target a skull strip keeps: brain, CSF and choroid plexus, everything inside the
#: skull (the brain mask of FreeSurfer's and SynthStrip's skull strips holds the CSF too)
SKULL_STRIP_TARGET = 'intracranial volume'


def plan_tissue_removal(rng):
    """Variants: ``remove`` (blank an ROI), ``keep`` (blank all but an ROI) and, one draw in
    ten, ``skull_strip`` (keep the intracranial volume; prompts name no ROI: "skull strip
    the image", "remove the skull"). Without it "remove the skull" was read as removing the
    intracranial volume, which blanks the brain."""
    draw = rng.random()
    variant = 'skull_strip' if draw < 0.1 else 'keep' if draw < 0.4 else 'remove'
    return _plan_single('tissue_removal', rng, 0.35, variant)


def write_tissue_removal(w: Writer) -> TaskDraft:
    if w.plan.variant == 'skull_strip':
        if SKULL_STRIP_TARGET not in w.case.present:
            raise Unwritable('the case has no intracranial volume to keep')
        phrase = anatomy_phrase(w.rng, w.ontology.targets[SKULL_STRIP_TARGET])
    else:
        phrase = w.roi()
    w.bind_roi(phrase)
    prompt = w.prompt()
    scan = w.case.sessions[0][0]
    function, name = ('remove', 'removed') if w.plan.variant == 'remove' else ('extract', 'extracted')
    mask = w.encode_and_segment(phrase.canonical, 'roi')
    w.add(f'{name} = {function}({scan.name}, {mask})')
    w.add(f'save({name}, "{name}")')
    segments = list(w.segments)

    def evaluate(gt):
        image = getattr(LIB, function)(gt.scan(scan.name), gt.mask(phrase.canonical, 0))
        return _expected(segments, images={name: image})
    return w.draft(prompt, evaluate)
