"""``voxelprompt eval``: evaluation suites of a weights folder on held-out prompts and cases."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from vpcli.cli import app
from vpcli.cli._common import reports_errors


@app.command('eval')
@reports_errors
def evaluate(
    suite: Annotated[str, typer.Option('--suite', help='prompts, anatomy, lesions, characterization, end-to-end or consistency.')],
    json_output: Annotated[bool, typer.Option('--json', help='Print the result as JSON instead of the table.')] = False,
    weights: Annotated[Optional[Path], typer.Option('--weights', help='Weights folder (default: $VOXELPROMPT_WEIGHTS, else the shipped weights/).')] = None,
    count: Annotated[Optional[int], typer.Option('--count', min=1, help='Episodes per category (prompts) or tasks (other suites; cases for consistency; default: per suite, see docs/evaluation.md).')] = None,
    seed: Annotated[int, typer.Option('--seed', help='Seed of the held-out draws (same seed and weights give the same numbers).')] = 0,
    device: Annotated[str, typer.Option('--device', help='auto, cpu, cuda or cuda:N.')] = 'auto',
    threads: Annotated[Optional[int], typer.Option('--threads', min=1, help='Torch CPU threads.')] = None,
    programs: Annotated[str, typer.Option('--programs', help='Scan suites: agent (the model writes the program) or target (k* teacher-forced for phi: the vision network alone).')] = 'agent',
    quiet: Annotated[bool, typer.Option('--quiet', '-q', help='No progress lines on stderr.')] = False,
) -> None:
    """Evaluate weights on held-out prompts and synthetic cases (docs/evaluation.md).

    stdout carries the table and a headline line (or, with --json, one JSON object);
    progress goes to stderr. Exit codes: 0 ok, 3 bad input (unknown suite, weights).
    """
    from vpcli.evaluate import check_suite, format_result, run_suite

    check_suite(suite)
    if programs not in ('agent', 'target'):
        from vpcli.errors import BadInputError
        raise BadInputError(f'--programs {programs!r}: expected agent or target')

    import torch

    from vpcli.devices import resolve_device
    chosen = resolve_device(device)
    if threads:
        torch.set_num_threads(threads)

    def progress(line: str) -> None:
        if not quiet:
            print(f'voxelprompt: {line}', file=sys.stderr, flush=True)

    result = run_suite(suite, weights, count=count, seed=seed, device=chosen, programs=programs,
                       progress=progress)
    print(json.dumps(result, indent=2, allow_nan=False) if json_output else format_result(result))
