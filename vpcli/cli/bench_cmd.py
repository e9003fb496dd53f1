"""``voxelprompt bench``: measurements of the product's components."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer

from vpcli.cli._app import app
from vpcli.cli._common import reports_errors
from vpcli.cli._setup import use_threads

bench_app = typer.Typer(help='Measure speed and memory of voxelprompt components.',
                        no_args_is_help=True)
app.add_typer(bench_app, name='bench')


def _resolve_device(device: str) -> str:
    """:func:`vpcli.devices.resolve_device`, reported as a bad ``--device`` option (exit 2)."""
    from vpcli.devices import resolve_device
    from vpcli.errors import BadInputError
    try:
        return resolve_device(device)
    except BadInputError as error:
        raise typer.BadParameter(str(error)) from None


@bench_app.command('vision')
@reports_errors
def vision(
    json_output: Annotated[bool, typer.Option('--json', help='Print the summary as JSON.')] = False,
    device: Annotated[str, typer.Option(help='auto, cpu, cuda or cuda:N.')] = 'auto',
    samples: Annotated[int | None, typer.Option(
        min=1, help='Samples per number of scans [default: 2 on CPU, 20 on CUDA].')] = None,
    max_scans: Annotated[int, typer.Option(min=1, max=8, help='Run 1 to this many scans per sample.')] = 5,
    config: Annotated[str, typer.Option(help='Vision network config: small or paper.')] = 'small',
    seed: Annotated[int, typer.Option(help='Seed of the geometry and noise draws.')] = 0,
    fov_scale: Annotated[float, typer.Option(
        min=0.05, max=1.0, help='Scale the field of view (1 = the paper\'s 155x190x165 mm; '
                                'smaller for quick smoke runs).')] = 1.0,
    threads: Annotated[int | None, typer.Option(min=1, help='CPU threads for torch.')] = None,
) -> None:
    """Native resolution vs 1 mm isotropic: inference time and peak memory (paper App. C.4)."""
    from vpcli.vision.bench import BenchSettings, format_summary, run_benchmark
    from vpcli.vision.config import CONFIGS

    if config not in CONFIGS:
        raise typer.BadParameter(f'{config!r}: expected one of {", ".join(sorted(CONFIGS))}',
                                 param_hint='--config')
    resolved = _resolve_device(device)
    use_threads(threads)
    if samples is None:
        samples = 20 if resolved.startswith('cuda') else 2
    settings = BenchSettings(device=resolved, samples=samples, max_scans=max_scans,
                             config=config, seed=seed, fov_scale=fov_scale)

    def progress(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    summary = run_benchmark(settings, progress=progress)
    print(json.dumps(summary, indent=2) if json_output else format_summary(summary))
