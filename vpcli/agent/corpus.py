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


def scan_lines(case, rng: np.random.Generator | None = None, unknown: float = 0.0) -> list[str]:
    """The state's scan lines of a case (a description or a synthesised case).

    With ``unknown`` > 0 (and ``rng``), a one-session case's lines say ``date unknown``
    with that probability and, independently, ``session unknown``, as the lines of real
    scans without that metadata do (:meth:`vpcli.volumes.Scan.describe`). Longitudinal
    cases keep both: their programs compare dates and sessions.
    """
    if unknown <= 0 or rng is None:
        return [scan.describe() for scan in case.scans]
    no_date, no_session = rng.random() < unknown, rng.random() < unknown
    if len({scan.session for scan in case.scans}) > 1:
        no_date = no_session = False
    return [scan.describe(date=not no_date, session=not no_session) for scan in case.scans]


def task_episode(draft, case, rng: np.random.Generator, unknown_metadata: float = 0.0) -> Episode:
    """The episode of a written task (target steps as model text, simulated feedback)."""
    return episode_from_program(draft.prompt, scan_lines(case, rng, unknown_metadata),
                                [s.name for s in case.scans],
                                draft.program, rng, category=draft.category,
                                template=draft.variant)


def sample_episodes(rng: np.random.Generator, count: int, split: str = 'train',
                    refusal_fraction: float = REFUSAL_FRACTION,
                    category: str | None = None, unknown_metadata: float = 0.0,
                    paraphrase_fraction: float = 0.0) -> list[Episode]:
    """Draw ``count`` episodes: task episodes on described cases plus refusals.

    Args:
        rng: The generator (the same seed gives the same episodes).
        count: How many.
        split: ``train`` (never a held-out prompt) or ``eval`` (held-out prompts only).
        refusal_fraction: Share of refusal episodes.
        category: Fix the task category (no refusals then).
        unknown_metadata: Chance that a one-session case's scan lines say the date, and
            independently the session, is unknown (:func:`scan_lines`). When > 0,
            refusal episodes take the scan lines of a described case drawn the same way,
            so the scan lines say nothing about whether to refuse; at 0 they take one of
            two fixed sets (how earlier runs were trained).
        paraphrase_fraction: Share of task episodes whose prompt comes from the paraphrase
            families of ``split`` (:mod:`vpcli.tasks.paraphrase`) instead of the template
            table. At 0 no draw is spent on the choice (earlier runs' streams unchanged).
    """
    from vpcli.tasks.described import describe_case, draw_described
    from vpcli.tasks.sampler import plan_task

    episodes = []
    for _ in range(count):
        if category is None and rng.random() < refusal_fraction:
            kind, prompt = refusal_prompts(rng, 1)[0]
            if unknown_metadata > 0:
                scans = scan_lines(describe_case(plan_task(rng), rng), rng, unknown_metadata)
            else:
                scans = ['img0: T1w, date unknown, session 01'] if rng.random() < 0.5 else \
                    ['img0: FLAIR, date 2021-04-02, session 01', 'img1: T1w, date 2021-04-02, session 01']
            episodes.append(refusal_episode(prompt, scans, kind))
            continue
        paraphrased = paraphrase_fraction > 0 and rng.random() < paraphrase_fraction
        draft, case = draw_described(rng, category, split, paraphrased=paraphrased)
        episodes.append(task_episode(draft, case, rng, unknown_metadata))
    return episodes


def tokenizer_corpus(seed: int = 0, count: int = 20000) -> list[str]:
    """Texts for training the tokenizer: prompts, scan lines, program steps, feedback."""
    rng = np.random.default_rng([seed, 7])
    texts = [text for episode in sample_episodes(rng, count) for text in episode.texts()]
    # every function name and keyword appears at least once, whatever the sample holds
    from vpcli.library.registry import registry
    texts.extend(f'{name}(' for name in sorted(registry()))
    return texts
