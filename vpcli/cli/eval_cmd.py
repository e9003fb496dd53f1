"""``voxelprompt eval``: evaluation suites of a weights folder on held-out prompts and cases."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from vpcli.cli._app import app
from vpcli.cli._common import reports_errors, stderr_logger
from vpcli.cli._setup import invoked_command_line, use_threads


@app.command('eval')
@reports_errors
def evaluate(
    suite: Annotated[str, typer.Option('--suite', help='prompts, paraphrases, anatomy, lesions, characterization, end-to-end, consistency, example, real, or all.')],
    json_output: Annotated[bool, typer.Option('--json', help='Print the result as JSON instead of the table.')] = False,
    weights: Annotated[Optional[Path], typer.Option('--weights', help='Weights folder (default: $VOXELPROMPT_WEIGHTS, else the shipped weights/).')] = None,
    count: Annotated[Optional[int], typer.Option('--count', min=1, help='Episodes per category (prompts) or tasks (other suites; cases for consistency; default: per suite, see docs/evaluation.md).')] = None,
    seed: Annotated[int, typer.Option('--seed', help='Seed of the held-out draws (same seed and weights give the same numbers).')] = 0,
    device: Annotated[str, typer.Option('--device', help='auto, cpu, cuda or cuda:N.')] = 'auto',
    threads: Annotated[Optional[int], typer.Option('--threads', min=1, help='Torch CPU threads.')] = None,
    programs: Annotated[str, typer.Option('--programs', help='Scan suites: agent (the model writes the program) or target (k* teacher-forced for phi: the vision network alone).')] = 'agent',
    quiet: Annotated[bool, typer.Option('--quiet', '-q', help='No progress lines on stderr.')] = False,
    record: Annotated[bool, typer.Option('--record', help='Store the results (with command, machine and date) in the weights folder\'s manifest.json and rewrite its MODEL_CARD.md.')] = False,
) -> None:
    """Evaluate weights on held-out prompts and synthetic cases (docs/evaluation.md).

    stdout carries the table and a headline line (or, with --json, one JSON object);
    progress goes to stderr. Exit codes: 0 ok, 3 bad input (unknown suite, weights).
    """
    from vpcli.evaluate import SUITES, check_suite, evaluate as evaluate_suite, format_result

    suites = list(SUITES) if suite == 'all' else [check_suite(suite)]
    if programs not in ('agent', 'target'):
        from vpcli.errors import BadInputError
        raise BadInputError(f'--programs {programs!r}: expected agent or target')

    from vpcli.devices import resolve_device
    chosen = resolve_device(device)
    use_threads(threads)
    progress = stderr_logger(quiet)

    from vpcli.weights import load_bundle
    bundle = load_bundle(weights, chosen)
    results = {}
    for name in suites:
        progress(f'suite {name}')
        results[name] = evaluate_suite(name, bundle, count=count, seed=seed, device=chosen,
                                       programs=programs, progress=progress)
        if not json_output:
            print(format_result(results[name]) + ('\n' if len(suites) > 1 else ''), flush=True)
    if json_output:
        document = results[suites[0]] if len(suites) == 1 else {'suites': results}
        print(json.dumps(document, indent=2, allow_nan=False))
    if record:
        _record(bundle.folder, results)
        progress(f'recorded in {bundle.folder / "manifest.json"} and {bundle.folder / "MODEL_CARD.md"}')


def _record(folder: Path, results: dict) -> None:
    """Merge suite results into the manifest's evaluation and rewrite the model card."""
    import shlex

    from vpcli import model_card
    from vpcli.evaluate import headline
    from vpcli.volumes import write_text_atomic
    path = folder / 'manifest.json'
    manifest = json.loads(path.read_text())
    argv = invoked_command_line('eval', ['voxelprompt', 'eval', '--suite', ','.join(results),
                                         '--record'])
    new = model_card.evaluation_record(results, shlex.join(argv),
                                       {suite: headline(result) for suite, result in results.items()})
    old = manifest.get('evaluation') or {}
    if old.get('suites') and len(results) < len(old['suites']):
        new['suites'] = {**old['suites'], **new['suites']}  # keep suites not rerun
    manifest['evaluation'] = new
    write_text_atomic(path, json.dumps(manifest, indent=2) + '\n')
    model_card.write(folder)
