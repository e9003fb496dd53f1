"""Episodes of the task world for the language model, and the tokenizer corpus.

Training episodes come from the real task world (:mod:`vpcli.tasks`): a task is planned,
written against a case described without voxels (:mod:`vpcli.tasks.described`), and its
target program k* becomes the episode's steps. A share of episodes are refusals
(:func:`vpcli.agent.refusal.refusal_prompts`). Held-out prompts (2 % of all prompt texts)
never appear in training; :func:`sample_episodes` with ``split='eval'`` draws only them.
"""

from __future__ import annotations

import numpy as np

from vpcli.agent.episodes import Episode, episode_from_program, refusal_episode
from vpcli.agent.refusal import refusal_prompts

#: default share of refusal episodes in training batches
REFUSAL_FRACTION = 0.08


def scan_lines(case) -> list[str]:
    """The state's scan lines of a case description."""
    return [scan.describe() for scan in case.scans]


def task_episode(draft, case, rng: np.random.Generator) -> Episode:
    """The episode of a written task (target steps as model text, simulated feedback)."""
    return episode_from_program(draft.prompt, scan_lines(case), [s.name for s in case.scans],
                                draft.program, rng, category=draft.category,
                                template=draft.variant)


def sample_episodes(rng: np.random.Generator, count: int, split: str = 'train',
                    refusal_fraction: float = REFUSAL_FRACTION,
                    category: str | None = None) -> list[Episode]:
    """Draw ``count`` episodes: task episodes on described cases plus refusals.

    Args:
        rng: The generator (the same seed gives the same episodes).
        count: How many.
        split: ``train`` (never a held-out prompt) or ``eval`` (held-out prompts only).
        refusal_fraction: Share of refusal episodes.
        category: Fix the task category (no refusals then).
    """
    from vpcli.tasks.described import draw_described

    episodes = []
    for _ in range(count):
        if category is None and rng.random() < refusal_fraction:
            kind, prompt = refusal_prompts(rng, 1)[0]
            scans = ['img0: T1w, date unknown, session 01'] if rng.random() < 0.5 else \
                ['img0: FLAIR, date 2021-04-02, session 01', 'img1: T1w, date 2021-04-02, session 01']
            episodes.append(refusal_episode(prompt, scans, kind))
            continue
        draft, case = draw_described(rng, category, split)
        episodes.append(task_episode(draft, case, rng))
    return episodes


def tokenizer_corpus(seed: int = 0, count: int = 20000) -> list[str]:
    """Texts for training the tokenizer: prompts, scan lines, program steps, feedback."""
    rng = np.random.default_rng([seed, 7])
    texts = [text for episode in sample_episodes(rng, count) for text in episode.texts()]
    # every function name and keyword appears at least once, whatever the sample holds
    from vpcli.library.registry import registry
    texts.extend(f'{name}(' for name in sorted(registry()))
    return texts
