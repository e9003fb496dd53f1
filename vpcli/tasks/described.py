"""Cases described without voxels, and the held-out prompt split.

Prompt and program writing needs only a :class:`~vpcli.tasks.world.CaseInfo` (scan list,
lesions with descriptor tags, present targets). :func:`describe_case` draws one as the
synthesiser would give it for a plan, with random lesion tags, so the language model can
be trained and evaluated on millions of prompts without making scans (code-only training,
the ``prompts`` evaluation suite). The programs are the same ones the oracle check runs on
synthetic scans.

Held-out prompts: :func:`is_held_out` puts a fixed 2 % of all prompt texts (by a hash of
the text) out of training. Training draws skip them; the ``prompts`` evaluation suite draws
only them, so every prompt it asks was never seen in training.
"""

from __future__ import annotations

import hashlib

import numpy as np

from vpcli.tasks.categories import Unwritable
from vpcli.tasks.ontology import load_ontology
from vpcli.tasks.sampler import plan_task, write_task
from vpcli.tasks.world import CaseInfo, LesionInfo, ScanInfo
from vpcli.volumes import POST_CONTRAST

#: one prompt text in this many is held out of training
HELD_OUT_MODULUS = 50

_LOBES = ('frontal', 'parietal', 'temporal', 'occipital', 'deep grey')
_TERRITORIES = ('ACA', 'MCA', 'PCA')
_SIGNALS = ('hyperintense', 'hypointense', 'isointense')


def is_held_out(prompt: str) -> bool:
    """Whether a prompt text belongs to the held-out evaluation split."""
    text = ' '.join(prompt.split()).lower()
    digest = hashlib.sha1(text.encode()).digest()
    return int.from_bytes(digest[:4], 'big') % HELD_OUT_MODULUS == 0


def describe_case(plan, rng: np.random.Generator) -> CaseInfo:
    """A case description for ``plan`` as the synthesiser would give it, with random tags."""
    ontology = load_ontology()
    scans, index = [], 0
    year = int(rng.integers(2012, 2024))
    month = int(rng.integers(1, 13))
    for session, modalities in enumerate(plan.request.sessions):
        date = f'{year + session}-{month:02d}-{int(rng.integers(1, 29)):02d}'
        for modality in modalities:
            scans.append(ScanInfo(f'img{index}', 'T1w' if modality == POST_CONTRAST else modality,
                                  session, date, modality == POST_CONTRAST))
            index += 1
    lesions = []
    session = plan.request.sessions[0]
    for instance in range(1, plan.request.lesions + 1):
        tags = {'side': str(rng.choice(['left', 'right'])),
                'lobe': str(rng.choice(_LOBES)),
                'territory': str(rng.choice(_TERRITORIES)),
                'signal': str(rng.choice(_SIGNALS))}
        if POST_CONTRAST in session:
            tags['enhancement'] = str(rng.choice(['enhancing', 'non-enhancing']))
        if 'ADC' in session:
            tags['diffusion'] = str(rng.choice(['diffusion-restricting', 'non-restricting']))
        lesions.append(LesionInfo(instance, str(rng.choice(ontology.leaf_classes())), tags,
                                  float(rng.uniform(0.5, 30))))
    change = None
    if len(plan.request.sessions) > 1:
        change = str(rng.choice(['atrophy', 'enlargement']))
    return CaseInfo(tuple(scans), tuple(lesions), frozenset(ontology.targets), change)


def draw_described(rng: np.random.Generator, category: str | None = None,
                   split: str = 'train', attempts: int = 5000, paraphrased: bool = False):
    """A written task on a described case, from the training or the held-out split.

    Args:
        rng: The generator.
        category: Fix the category (default: uniform).
        split: ``train`` (never a held-out prompt) or ``eval`` (only held-out prompts).
        paraphrased: Prompt from the paraphrase families of ``split`` (held out by whole
            family) instead of the template table (held out by :func:`is_held_out`).

    Returns:
        ``(draft, case_info)``.
    """
    want_held_out = split == 'eval'
    for _ in range(attempts):
        plan = plan_task(rng, category)
        case = describe_case(plan, rng)
        try:
            draft = write_task(plan, case, rng,
                               f'paraphrases-{split}' if paraphrased else 'templates')
        except Unwritable:
            continue
        if paraphrased or is_held_out(draft.prompt) == want_held_out:
            return draft, case
    raise RuntimeError(f'no {split} task of category {category or "any"} in {attempts} draws')
