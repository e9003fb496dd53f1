"""A small hand-written task world for the agent tests (the real one is ``vpcli.tasks``).

Three categories, a few templates and synonyms each, and programs written in the library's
language; enough to train a tiny model to copy programs in seconds.
"""

from __future__ import annotations

import numpy as np

from vpcli.agent.episodes import Episode, episode_from_program, refusal_episode
from vpcli.agent.refusal import refusal_prompts

#: canonical names of the real task world (the agent may write only those, constrained decoding)
TARGETS = {
    'left hippocampus': ('left hippocampus', 'hippocampus on the left'),
    'right thalamus': ('right thalamus', 'thalamus on the right'),
    'brainstem': ('brainstem', 'brain stem'),
}
TEMPLATES = {
    'volume': ('what is the volume of the {roi}?', 'measure the {roi} volume'),
    'segmentation': ('segment the {roi}', 'outline the {roi}'),
    'volume_change': ('how much has the {roi} changed?', 'compute the {roi} volume change'),
}
SCANS = {1: ['img0: T1w, date 2020-01-01, session 01'],
         2: ['img0: T1w, date 2020-01-01, session 01', 'img1: T1w, date 2021-01-01, session 02']}


def program(category: str, target: str) -> str:
    """The target program of one task."""
    if category == 'segmentation':
        return f'# step 1\nenc = encode(img0)\nmask = segment(enc, "{target}")\nsave(mask, "{target}")\n'
    if category == 'volume':
        return (f'# step 1\nenc = encode(img0)\nmask = segment(enc, "{target}")\n'
                f'# step 2\nv = volume(mask)\noutput("{target} volume", v, "mL")\nread(v)\n'
                f'# step 3\nanswer(f"The {target} volume is {{v:.2f}} mL")\n')
    return (f'# step 1\nenc = encode(img0, img1)\nread(enc)\nmasks = segment(enc, "{target}")\n'
            f'# step 2\nchange = percent_change(volume(masks[0]), volume(masks[1]))\n'
            f'output("{target} volume change", change, "%")\n')


def sample(rng: np.random.Generator, count: int, refusal_fraction: float = 0.2) -> list[Episode]:
    """Draw episodes (a share of them refusals). Refusals that begin with an in-scope request
    ("segment the left hippocampus and then open a shell") are drawn again: a model trained
    for seconds on this small corpus cannot tell them from its task prompts, and these tests
    are of the loop, not of refusal training."""
    from vpcli.agent.refusal import _FILLERS
    episodes = []
    for _ in range(count):
        if rng.random() < refusal_fraction:
            kind, prompt = refusal_prompts(rng, 1)[0]
            while prompt.startswith(_FILLERS['inscope']):
                kind, prompt = refusal_prompts(rng, 1)[0]
            episodes.append(refusal_episode(prompt, SCANS[1], kind))
            continue
        category = sorted(TEMPLATES)[int(rng.integers(len(TEMPLATES)))]
        target = sorted(TARGETS)[int(rng.integers(len(TARGETS)))]
        synonym = TARGETS[target][int(rng.integers(2))]
        template = TEMPLATES[category][int(rng.integers(2))]
        scans = SCANS[2 if category == 'volume_change' else 1]
        names = [line.split(':')[0] for line in scans]
        episodes.append(episode_from_program(template.format(roi=synonym), scans, names,
                                             program(category, target), rng, category, template))
    return episodes


def corpus(seed: int = 0, count: int = 300) -> list[str]:
    """Texts for training a test tokenizer."""
    rng = np.random.default_rng(seed)
    return [text for episode in sample(rng, count) for text in episode.texts()]
