"""Code-only episodes of a joint run: drawing them (with the code refresh's focus
categories), batching them on the training device, scoring how hard each one is for the
language model, and the refresh batch that leads with the mined hardest ones."""

from __future__ import annotations

import numpy as np
import torch

from vpcli.train.recipe import Recipe


def code_episodes(recipe: Recipe, rng: np.random.Generator, count: int, focus: int = 0) -> list:
    """``count`` code-only episodes, ``focus`` of them from the recipe's ``refresh_focus``
    categories."""
    from vpcli.agent.corpus import sample_episodes

    episodes = sample_episodes(rng, count - focus, refusal_fraction=recipe.refusal_fraction,
                               unknown_metadata=recipe.unknown_metadata,
                               paraphrase_fraction=recipe.paraphrase_fraction)
    for _ in range(focus):
        category = recipe.refresh_focus[int(rng.integers(len(recipe.refresh_focus)))]
        episodes += sample_episodes(rng, 1, category=category,
                                    unknown_metadata=recipe.unknown_metadata,
                                    paraphrase_fraction=recipe.paraphrase_fraction)
    return episodes


def episode_tensors(tokenizer, agent, episodes: list, rng: np.random.Generator,
                    device: str = 'cpu'):
    """``(ids, targets, encodings)`` of episodes on the training device."""
    from vpcli.agent.training import make_batch

    ids, targets, encodings = make_batch(tokenizer, episodes, agent.config.encoding_width, rng,
                                         agent.config.max_positions)
    ids, targets = ids.to(device), targets.to(device)
    return ids, targets, None if encodings is None else encodings.to(device)


def episode_hardness(agent, tokenizer, episodes: list, rng: np.random.Generator,
                     device: str = 'cpu', chunk: int = 16) -> list[float]:
    """Per episode, the highest cross-entropy of any one trained token (program,
    ``<STEP>``, ``<STOP>``, ``<REFUSE>``) under teacher forcing, by the language model as
    it is now (no gradient). Above ln 2 the target token has probability under one half,
    so another token may be likelier and greedy decoding may write a different
    program."""
    order = sorted(range(len(episodes)), key=lambda i: len(episodes[i].prompt)
                   + sum(len(step) for step in episodes[i].steps))
    scores = [0.0] * len(episodes)
    was_training = agent.training
    agent.eval()
    try:
        with torch.inference_mode():
            for start in range(0, len(order), chunk):
                rows = order[start:start + chunk]
                ids, targets, encodings = episode_tensors(tokenizer, agent,
                                                          [episodes[i] for i in rows], rng, device)
                logits, _, _ = agent(ids, encodings)
                ce = torch.nn.functional.cross_entropy(
                    logits.float().transpose(1, 2), targets, ignore_index=-100,
                    reduction='none')
                for row, value in zip(rows, ce.max(dim=1).values.tolist()):
                    scores[row] = value
    finally:
        agent.train(was_training)
    return scores


def refresh_episodes(recipe: Recipe, step: int, rng: np.random.Generator, agent, tokenizer,
                     device: str = 'cpu') -> tuple[list, list[float] | None]:
    """A refresh batch's episodes (the mined hard rows first, then the drawn ones) and
    the mined pool's hardness (None without mining).

    The ``refresh_hard_rows`` mined rows are the hardest (:func:`episode_hardness`) of
    ``refresh_hard_pool`` freshly drawn episodes, scored with ``default_rng([seed, step, 2])``.
    """
    hard = min(recipe.refresh_hard_rows, recipe.batch_size) if recipe.refresh_hard_pool else 0
    drawn = recipe.batch_size - hard
    focus = round(drawn * recipe.refresh_focus_fraction) if recipe.refresh_focus else 0
    episodes, scores = [], None
    if hard:
        pool = code_episodes(recipe, rng, max(recipe.refresh_hard_pool, hard))
        scores = episode_hardness(agent, tokenizer, pool,
                                  np.random.default_rng([recipe.seed, step, 2]), device)
        ranked = sorted(range(len(pool)), key=lambda i: (-scores[i], i))
        episodes = [pool[i] for i in ranked[:hard]]
    return episodes + code_episodes(recipe, rng, drawn, focus), scores
