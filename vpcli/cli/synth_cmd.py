"""``voxelprompt synth``: sample training tasks for inspection, or run the oracle check."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from vpcli.cli._app import app
from vpcli.cli._common import reports_errors


@app.command('synth')
@reports_errors
def synth(
    count: Annotated[int, typer.Option('-n', '--count', min=1,
                                       help='Number of tasks to sample (or to check).')] = 8,
    seed: Annotated[int, typer.Option('--seed', help='Seed; the same seed gives the same tasks.')] = 0,
    output_dir: Annotated[Optional[Path], typer.Option(
        '-o', '--output', help='Folder to write one sub-folder per task to (scans, truth masks, '
                               'prompt, program, expected.json, preview.png).')] = None,
    category: Annotated[Optional[str], typer.Option(
        '--category', help='Only this task category (default: all 17 in turn).')] = None,
    oracle_check: Annotated[bool, typer.Option(
        '--oracle-check', help='Run every target program in the sandbox with ground-truth '
                               'vision and print the pass rate per category.')] = False,
    tasks_per_case: Annotated[int, typer.Option(
        '--tasks-per-case', min=1, help='Oracle check: tasks drawn from one synthesised case.')] = 25,
    overwrite: Annotated[bool, typer.Option('--overwrite', help='Write into a non-empty folder.')] = False,
) -> None:
    """Sample tasks (prompt, scans, target program, expected results) from the training world."""
    from vpcli.errors import BadInputError, ExitCode
    from vpcli.tasks.templates import CATEGORIES

    if category is not None and category not in CATEGORIES:
        raise BadInputError(f'--category: unknown category "{category}" (one of: {", ".join(CATEGORIES)})')
    if oracle_check:
        ok = _run_oracle_check(count, seed, tasks_per_case)
        if not ok:
            raise typer.Exit(ExitCode.RUNTIME_FAILURE)
        return
    if output_dir is None:
        raise BadInputError('synth: give an output folder with -o (or use --oracle-check)')
    _write_samples(count, seed, output_dir, category, overwrite)


def _write_samples(count: int, seed: int, output_dir: Path, category: str | None,
                   overwrite: bool) -> None:
    import numpy as np
    import torch

    from vpcli.errors import BadInputError
    from vpcli.tasks.export import write_case
    from vpcli.tasks.oracle import make_world
    from vpcli.tasks.sampler import sample_task
    from vpcli.tasks.templates import CATEGORIES

    torch.set_num_threads(1)
    if output_dir.exists() and any(output_dir.iterdir()) and not overwrite:
        raise BadInputError(f'{output_dir}: folder is not empty (use --overwrite)')
    output_dir.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        # one generator per task, derived from the seed, so task i does not depend on n
        rng = np.random.default_rng([seed, index])
        chosen = category or CATEGORIES[index % len(CATEGORIES)]
        draft, info, world = sample_task(rng, make_world, chosen)
        expected = draft.evaluate(world)
        folder = output_dir / f'task-{index:04d}_{draft.category}'
        write_case(folder, draft, info, world, expected)
        print(f'{folder}\t{draft.prompt}')


def _run_oracle_check(count: int, seed: int, tasks_per_case: int) -> bool:
    import time

    import torch
    from rich.console import Console
    from rich.table import Table

    from vpcli.tasks.check import oracle_check

    torch.set_num_threads(1)
    console = Console(stderr=True)
    failures = []
    started = time.perf_counter()

    def progress(index, result):
        if result.problems:
            failures.append(result)
        if (index + 1) % 50 == 0 or index + 1 == count:
            console.print(f'{index + 1}/{count} tasks checked, {len(failures)} failed, '
                          f'{time.perf_counter() - started:.0f} s')

    report = oracle_check(count, seed, tasks_per_case, progress=progress)
    table = Table(title=f'oracle check: {count} tasks, seed {seed}')
    table.add_column('category')
    table.add_column('passed', justify='right')
    table.add_column('total', justify='right')
    table.add_column('pass rate', justify='right')
    for category, (passed, total) in report.by_category().items():
        rate = f'{100 * passed / total:.1f}%' if total else 'n/a'
        table.add_row(category, str(passed), str(total), rate)
    Console().print(table)
    print(f'overall: {report.passed}/{len(report.results)} passed '
          f'({100 * report.passed / max(len(report.results), 1):.2f}%); '
          f'{report.cases_made} synthesised cases ({report.synthesis_seconds:.0f} s), '
          f'total {report.total_seconds:.0f} s')
    for failure in failures[:20]:
        print(f'FAILED {failure.category}/{failure.variant}: {failure.prompt}')
        for problem in failure.problems[:3]:
            print(f'    {problem}')
    complete = all(total > 0 for _, total in report.by_category().values())
    return report.passed == len(report.results) and complete
