"""``voxelprompt exec``: run a program (hand-written, or a ``script.py`` from a run) over scans."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from vpcli.cli._app import app
from vpcli.cli._common import print_result, report_warnings, reports_errors, stderr_logger
from vpcli.cli._setup import invoked_command_line, load_vision_for, use_threads


@app.command('exec')
@reports_errors
def exec_program(
    script: Annotated[Path, typer.Argument(help='Program file: the restricted Python of '
                                                'docs/programs.md, steps split by "# step N" lines.')],
    scans: Annotated[list[Path], typer.Argument(help='Input scans (NIfTI/MGH), bound to img0, '
                                                     'img1, ... in this order.')],
    output: Annotated[Path, typer.Option('--output', '-o', help='Output folder (metrics.json, '
                                         'NIfTI volumes, script.py); written atomically.')],
    overwrite: Annotated[bool, typer.Option('--overwrite', help='Replace an existing non-empty '
                                            'output folder.')] = False,
    json_output: Annotated[bool, typer.Option('--json', help='Print metrics.json to stdout '
                                              'instead of the answer.')] = False,
    quiet: Annotated[bool, typer.Option('--quiet', '-q', help='No progress lines on '
                                        'stderr.')] = False,
    step_timeout: Annotated[float, typer.Option('--step-timeout', min=0.001, metavar='SECONDS',
                                                help='Wall-clock limit per program step.')] = 600.0,
    seed: Annotated[Optional[int], typer.Option('--seed', help='Random seed (Python, NumPy, '
                                                'torch).')] = 0,
    weights: Annotated[Optional[Path], typer.Option('--weights', help='Weights folder for programs '
                                                    'that call encode/segment (default: '
                                                    '$VOXELPROMPT_WEIGHTS, else weights/).')] = None,
    device: Annotated[str, typer.Option('--device', help='auto, cpu, cuda or cuda:N (for the '
                                        'vision network).')] = 'auto',
    no_qc: Annotated[bool, typer.Option('--no-qc', help='Skip the QC pictures and '
                                        'report.html.')] = False,
    strict_qc: Annotated[bool, typer.Option('--strict-qc', help='Exit with code 7 when quality '
                                            'control flags a mask or measurement (outputs are '
                                            'still written; docs/qc.md).')] = False,
    threads: Annotated[Optional[int], typer.Option('--threads', min=1, help='Torch CPU '
                                                   'threads.')] = None,
) -> None:
    """Run a program over scans; write masks, metrics.json and script.py to OUTPUT.

    stdout carries only the answer (when the program gives none, one "name: value unit"
    line per measured output; or, with --json, only the metrics JSON); progress goes to
    stderr. Exit codes: 0 ok, 3 bad input, 4 refused program, 5 failed step, 130 Ctrl-C
    (docs/exit-codes.md).
    """
    from vpcli.program_run import RunSettings, check_output_dir, execute_script

    log = stderr_logger(quiet)

    rebuilt = ['voxelprompt', 'exec', str(script), *map(str, scans), '-o', str(output)]
    rebuilt += ['--overwrite'] * overwrite + ['--json'] * json_output + ['--quiet'] * quiet
    rebuilt += ['--step-timeout', f'{step_timeout:g}']
    if seed is not None:
        rebuilt += ['--seed', str(seed)]
    rebuilt += (['--weights', str(weights)] if weights else []) + ['--no-qc'] * no_qc
    rebuilt += ['--device', device] if device != 'auto' else []
    rebuilt += ['--threads', str(threads)] if threads else []
    rebuilt += ['--strict-qc'] * strict_qc
    use_threads(threads)
    check_output_dir(output, overwrite)  # before the weights are loaded
    vision, weight_fields = load_vision_for(script, weights, device, log)
    settings = RunSettings(step_timeout_s=step_timeout, seed=seed,
                           command_line=invoked_command_line('exec', rebuilt), mode='exec',
                           **weight_fields)
    metrics = execute_script(script, scans, output, settings, overwrite=overwrite, log=log,
                             vision=vision, qc=not no_qc)
    print_result(metrics, json_output, log, output)
    report_warnings(metrics, strict_qc, quiet)

