"""Evaluation suites of a weights folder (``voxelprompt eval``; docs/evaluation.md).

Every suite runs on the held-out split only: prompts for which
:func:`vpcli.tasks.described.is_held_out` is true (never drawn in code-only training) and,
for the suites that need scans, cases synthesised from the held-out label-map source
(``split='eval'``). Random generators are ``default_rng([seed, 9000 + k, i])`` (suite ``k``,
task ``i``), disjoint from training's ``default_rng([seed, step])`` and
``default_rng([seed, 1, block])``; task ``i`` is the same task whatever ``count`` is.

Suites (each a function returning a plain dict, so a model card can be filled from Python):

- ``prompts``: program writing on described cases (no scans): exact match of the written
  program with k*, execution-equivalence, sandbox rejections; plus the refusal suite.
- ``anatomy`` / ``lesions``: segmentation tasks run end to end (agent, sandbox, live
  vision network); Dice of every mask the program made against the ground truth of the
  target k* names.
- ``characterization``: location, signal, enhancement and diffusion answers.
- ``end-to-end``: volume, extent and intensity outputs against the ground truth.
- ``consistency``: the same volume prompt on a scan resampled and re-oriented.

The scan suites take ``programs='agent'`` (the model writes the program: the product) or
``programs='target'`` (k* teacher-forced through the model for φ: the vision network and
φ alone, without program-writing errors). The CLI always reports which.

Modules: ``common`` (counts, seeds, means, Dice, program comparison), ``prompts`` (and the
refusal suite), ``tasks`` (one task run end to end on a synthesised case), ``segmentation``
(anatomy, lesions), ``characterization``, ``end_to_end``, ``consistency``, ``example``,
``paraphrases``, ``report`` (headlines and tables); the ``real`` suite is
:mod:`vpcli.real_suite`.
"""

from __future__ import annotations

import time

from vpcli.errors import BadInputError
from vpcli.evaluate.characterization import characterization_suite
from vpcli.evaluate.common import (CONSISTENCY_VARIANTS, DEFAULT_COUNTS, Progress, SUITES,
                                   _no_progress, mask_dice, programs_match)
from vpcli.evaluate.consistency import consistency_suite, transform_scans
from vpcli.evaluate.end_to_end import end_to_end_suite, output_errors
from vpcli.evaluate.example import EXAMPLE_PROMPTS, example_suite
from vpcli.evaluate.paraphrases import paraphrases_suite
from vpcli.evaluate.prompts import prompts_suite, refusal_report
from vpcli.evaluate.report import format_result, headline
from vpcli.evaluate.segmentation import anatomy_suite, lesions_suite
from vpcli.evaluate.tasks import TaskRun, _check_programs, run_task, score_masks
from vpcli.metrics import dice
from vpcli.real_suite import real_suite
from vpcli.volumes import json_ready


#: the package's public names (the suites' modules hold the rest)
__all__ = ['CONSISTENCY_VARIANTS', 'DEFAULT_COUNTS', 'EXAMPLE_PROMPTS', 'SUITES', 'TaskRun',
           'anatomy_suite', 'characterization_suite', 'check_suite', 'consistency_suite', 'dice',
           'end_to_end_suite', 'evaluate', 'example_suite', 'format_result', 'headline',
           'lesions_suite', 'mask_dice', 'output_errors', 'paraphrases_suite', 'programs_match',
           'prompts_suite', 'real_suite', 'refusal_report', 'run_task', 'score_masks',
           'transform_scans']

_SUITE_FUNCTIONS = {'example': example_suite, 'prompts': prompts_suite, 'anatomy': anatomy_suite, 'lesions': lesions_suite,
                    'characterization': characterization_suite, 'end-to-end': end_to_end_suite,
                    'consistency': consistency_suite, 'real': real_suite,
                    'paraphrases': paraphrases_suite}


def check_suite(suite: str) -> str:
    """The suite name, or a one-line :class:`BadInputError` naming the suites."""
    if suite not in _SUITE_FUNCTIONS:
        raise BadInputError(f'--suite {suite!r}: expected one of {", ".join(SUITES)}')
    return suite


def evaluate(suite: str, bundle, count: int | None = None, seed: int = 0, device: str = 'cpu',
             programs: str = 'agent', progress: Progress = _no_progress) -> dict:
    """Run one suite on loaded weights; the result with weights checksum, device and time."""
    check_suite(suite)
    count = DEFAULT_COUNTS[suite] if count is None else int(count)
    if count < 1:
        raise BadInputError(f'--count {count}: must be at least 1')
    started = time.perf_counter()
    function = _SUITE_FUNCTIONS[suite]
    if suite in ('prompts', 'paraphrases'):  # dry runs: no scans, no vision network
        result = function(bundle, count=count, seed=seed, progress=progress)
    else:
        _check_programs(programs)
        result = function(bundle, count=count, seed=seed, device=device, programs=programs,
                          progress=progress)
    ordered = {'suite': suite, 'weights_sha256': bundle.sha256, 'count': count, 'seed': seed,
               'device': device, 'seconds': round(time.perf_counter() - started, 2)}
    ordered.update({k: v for k, v in result.items() if k not in ordered})
    return json_ready(ordered)
