"""``voxelprompt run``: a prompt and scans in; the model's program runs; masks, metrics out."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from vpcli.cli._app import app
from vpcli.cli._common import print_result, report_warnings, reports_errors, stderr_logger
from vpcli.cli._setup import invoked_command_line, use_threads, weights_fields, weights_line


@app.command('run')
@reports_errors
def run(
    scans: Annotated[list[Path], typer.Argument(help='Input scans (NIfTI/MGH), bound to img0, img1, ... in this order.')],
    output: Annotated[Path, typer.Option('--output', '-o', help='Output folder (metrics.json, masks, script.py, QC); written atomically.')],
    prompt: Annotated[Optional[str], typer.Option('--prompt', '-p', help='What to do, in plain language.')] = None,
    recipe: Annotated[Optional[str], typer.Option('--recipe', help='An analysis recipe (voxelprompt recipes) instead of --prompt.')] = None,
    weights: Annotated[Optional[Path], typer.Option('--weights', help='Weights folder (default: $VOXELPROMPT_WEIGHTS, else the shipped weights/).')] = None,
    device: Annotated[str, typer.Option('--device', help='auto, cpu, cuda or cuda:N.')] = 'auto',
    threads: Annotated[Optional[int], typer.Option('--threads', min=1, help='Torch CPU threads.')] = None,
    seed: Annotated[int, typer.Option('--seed', help='Random seed (same inputs, seed and weights give identical outputs).')] = 0,
    max_steps: Annotated[int, typer.Option('--max-steps', min=1, max=64, help='Most program steps the model may write.')] = 12,
    step_timeout: Annotated[float, typer.Option('--step-timeout', min=0.001, metavar='SECONDS', help='Wall-clock limit per program step.')] = 600.0,
    json_output: Annotated[bool, typer.Option('--json', help='Print metrics.json to stdout instead of the answer.')] = False,
    quiet: Annotated[bool, typer.Option('--quiet', '-q', help='No log lines or progress on stderr.')] = False,
    overwrite: Annotated[bool, typer.Option('--overwrite', help='Replace an existing non-empty output folder.')] = False,
    no_qc: Annotated[bool, typer.Option('--no-qc', help='Skip the QC pictures and report.html.')] = False,
    strict_qc: Annotated[bool, typer.Option('--strict-qc', help='Exit with code 7 when quality control flags a mask or measurement (outputs are still written; docs/qc.md).')] = False,
) -> None:
    """Run a prompt over scans: the model writes the program, the sandbox runs it.

    stdout carries only the answer (when the program gives none, one "name: value unit"
    line per measured output; or, with --json, only the metrics JSON); logs go to stderr.
    Exit codes: 0 ok, 3 bad input, 4 refused prompt, 5 failed step, 130 Ctrl-C
    (docs/exit-codes.md). Replay the run with: voxelprompt exec OUTPUT/script.py SCANS -o OUT2.
    """
    from vpcli.errors import BadInputError

    log = stderr_logger(quiet)

    if (prompt is None) == (recipe is None):
        raise BadInputError('give exactly one of --prompt or --recipe')
    if prompt is not None and not prompt.strip():
        raise BadInputError('--prompt is empty')
    if recipe is not None:
        from vpcli.recipes import get_recipe
        prompt = get_recipe(recipe).prompt

    from vpcli.agent.prompt_run import check_prompt
    check_prompt(prompt)  # a refused prompt needs no weights and no scans (exit code 4)

    from vpcli.agent.prompt_run import run_prompt
    from vpcli.devices import resolve_device
    from vpcli.program_run import RunSettings, check_output_dir
    from vpcli.volumes import load_scans
    from vpcli.weights import load_bundle

    check_output_dir(output, overwrite)
    chosen = resolve_device(device)
    use_threads(threads)
    started = time.monotonic()
    scan_list = load_scans(scans)
    scans_loaded = time.monotonic()
    bundle = load_bundle(weights, chosen)
    weights_loaded = time.monotonic()
    # logged once both have loaded, so that a bad scan or weights folder is the only line
    for scan in scan_list:
        log(f'{scan.describe()} <- {scan.path}')
    log(weights_line(bundle, chosen))
    rebuilt = ['voxelprompt', 'run', *map(str, scans), '-o', str(output)]
    rebuilt += ['--prompt', prompt] if recipe is None else ['--recipe', recipe]
    rebuilt += ['--weights', str(weights)] if weights else []
    rebuilt += ['--device', device, '--seed', str(seed), '--max-steps', str(max_steps),
                '--step-timeout', f'{step_timeout:g}']
    rebuilt += ['--threads', str(threads)] if threads else []
    rebuilt += [flag for flag, on in (('--json', json_output), ('--quiet', quiet),
                                      ('--overwrite', overwrite), ('--no-qc', no_qc),
                                      ('--strict-qc', strict_qc)) if on]
    settings = RunSettings(step_timeout_s=step_timeout, seed=seed,
                           command_line=invoked_command_line('run', rebuilt), mode='run',
                           prompt=prompt, **weights_fields(bundle, chosen))
    with _Spinner(enabled=not quiet and sys.stderr.isatty()):
        program_run, _ = run_prompt(prompt, scan_list, bundle, settings, max_steps=max_steps,
                                    log=log)
    program_run.timings['load_s'] = scans_loaded - started
    program_run.timings['weights_s'] = weights_loaded - scans_loaded
    metrics = program_run.write(output, overwrite, log, qc=not no_qc)
    print_result(metrics, json_output, log, output)
    report_warnings(metrics, strict_qc, quiet)


class _Spinner:
    """A rich status spinner on stderr while the model works (only on a terminal)."""

    def __init__(self, enabled: bool):
        self.enabled, self.status = enabled, None

    def __enter__(self):
        if self.enabled:
            from rich.console import Console
            self.status = Console(file=sys.stderr).status('writing and running the program')
            self.status.start()
        return self

    def __exit__(self, *exc):
        if self.status is not None:
            self.status.stop()
        return False
