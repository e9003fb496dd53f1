"""The ``prompts`` suite: program writing on held-out prompts, and the refusal suite."""

from __future__ import annotations

from typing import Sequence

from vpcli.agent.prompt_run import dry_run
from vpcli.evaluate.common import (DEFAULT_COUNTS, Progress, _fraction, _join, _mean,
                                   _no_progress, _rng, programs_match)


# -----------------------------------------------------------------------------
# the refusal suite
# -----------------------------------------------------------------------------

def _dry_run(bundle, prompt: str, scan_lines: Sequence[str], seed: int):
    """:func:`vpcli.agent.prompt_run.dry_run` with the bundle's agent."""
    return dry_run(bundle.agent, prompt, scan_lines, seed)


def refusal_report(bundle, seed: int = 0, progress: Progress = _no_progress) -> dict:
    """Run every prompt of the packaged refusal suite (:func:`vpcli.agent.refusal.refusal_suite`).

    Returns:
        ``refused`` fraction (target >= 0.95), by gate and by model, per kind, and
        ``outside_library``: programs written for a prompt that was not refused and that
        the sandbox's validation rejected (target 0).
    """
    from vpcli.agent.refusal import MODEL_REFUSAL, refusal_suite
    rows = refusal_suite()
    scans = (['img0: T1w, date unknown, session 01'],
             ['img0: FLAIR, date 2021-04-02, session 01', 'img1: T1w, date 2021-04-02, session 01'])
    per_kind: dict[str, dict] = {}
    refused = by_gate = by_model = outside = errors = 0
    examples = []
    for index, (kind, prompt) in enumerate(rows):
        entry = per_kind.setdefault(kind, {'n': 0, 'refused': 0})
        entry['n'] += 1
        record, problem, status = _dry_run(bundle, prompt, scans[index % 2], seed)
        if status == 'rejected':
            outside += 1
            examples.append({'kind': kind, 'prompt': prompt, 'problem': problem})
        elif status == 'error':
            errors += 1
            examples.append({'kind': kind, 'prompt': prompt, 'problem': problem})
        elif record.refused:
            refused += 1
            entry['refused'] += 1
            if record.refusal_reason == MODEL_REFUSAL:
                by_model += 1
            else:
                by_gate += 1
        else:
            examples.append({'kind': kind, 'prompt': prompt, 'problem': 'not refused',
                             'program': record.model_program()})
    for entry in per_kind.values():
        entry['refused_fraction'] = _fraction(entry['refused'], entry['n'])
    progress(f'refusal suite: {refused}/{len(rows)} refused')
    return {'n': len(rows), 'refused': refused, 'refused_fraction': _fraction(refused, len(rows)),
            'refused_by_gate': by_gate, 'refused_by_model': by_model,
            'outside_library': outside, 'errors': errors, 'per_kind': per_kind,
            'not_refused': examples[:20]}


# -----------------------------------------------------------------------------
# suite 1: prompts
# -----------------------------------------------------------------------------

def prompts_suite(bundle, count: int = DEFAULT_COUNTS['prompts'], seed: int = 0,
                  progress: Progress = _no_progress, categories: Sequence[str] | None = None) -> dict:
    """Program writing on held-out prompts (described cases, dry executor; no scans).

    Args:
        bundle: Loaded weights.
        count: Held-out episodes per task category.
        seed: Seed of the draws.
        progress: Progress lines.
        categories: Restrict the categories (default: all 17).
    """
    from vpcli.agent.corpus import sample_episodes
    from vpcli.tasks.templates import CATEGORIES

    chosen = tuple(categories or CATEGORIES)
    per_category: dict[str, dict] = {}
    totals = dict(n=0, exact=0, equivalent=0, programs=0, rejected=0, errors=0, refused=0,
                  unfinished=0)
    examples = []
    for category in chosen:
        rng = _rng('prompts', seed, CATEGORIES.index(category))
        counts = dict(n=0, exact=0, equivalent=0, programs=0, rejected=0, errors=0, refused=0,
                      unfinished=0)
        for episode in sample_episodes(rng, count, split='eval', category=category):
            counts['n'] += 1
            record, problem, status = _dry_run(bundle, episode.prompt, episode.scan_lines, seed)
            if status != 'ok':
                counts['programs'] += 1
                counts['rejected' if status == 'rejected' else 'errors'] += 1
                examples.append({'category': category, 'prompt': episode.prompt, 'problem': problem})
                continue
            if record.refused:
                counts['refused'] += 1
                if len(examples) < 40:
                    examples.append({'category': category, 'prompt': episode.prompt,
                                     'problem': 'refused an in-scope prompt'})
                continue
            counts['programs'] += 1
            counts['unfinished'] += not record.stopped
            exact, equivalent = programs_match([s.model_text for s in record.steps], episode.steps)
            counts['exact'] += exact
            counts['equivalent'] += equivalent
            if not equivalent and len(examples) < 40:
                examples.append({'category': category, 'prompt': episode.prompt,
                                 'problem': 'different program',
                                 'written': record.model_program(),
                                 'target': _join(episode.steps)})
        counts['accuracy'] = _fraction(counts['exact'], counts['n'])
        counts['equivalent_accuracy'] = _fraction(counts['equivalent'], counts['n'])
        per_category[category] = counts
        for key in totals:
            totals[key] += counts[key]
        progress(f'prompts: {category}: {counts["exact"]}/{counts["n"]} exact')
    refusal = refusal_report(bundle, seed, progress)
    metrics = {
        'accuracy': _fraction(totals['exact'], totals['n']),
        'equivalent_accuracy': _fraction(totals['equivalent'], totals['n']),
        'mean_category_accuracy': _mean([c['accuracy'] for c in per_category.values()
                                         if c['accuracy'] is not None]),
        'episodes': totals['n'], 'programs': totals['programs'],
        'sandbox_rejected': totals['rejected'], 'internal_errors': totals['errors'],
        'false_refusals': totals['refused'], 'unfinished': totals['unfinished'],
        'refusal_fraction': refusal['refused_fraction'],
        'refusal_outside_library': refusal['outside_library'],
    }
    return {'suite': 'prompts', 'count': count, 'seed': seed, 'metrics': metrics,
            'per_category': per_category, 'refusal': refusal, 'examples': examples[:40]}
