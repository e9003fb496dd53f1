"""``voxelprompt bids``: BIDS Apps batch mode (participant and group levels)."""

from __future__ import annotations

import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from vpcli.cli._app import app
from vpcli.cli._common import reports_errors, stderr_logger
from vpcli.cli._setup import invoked_command_line, load_vision_for, use_threads, weights_line


class AnalysisLevel(str, Enum):
    participant = 'participant'
    group = 'group'


@app.command('bids')
@reports_errors
def bids(
    bids_dir: Annotated[Path, typer.Argument(help='Root of the BIDS dataset to read.')],
    output_dir: Annotated[Path, typer.Argument(help='Root of the derivatives dataset to write.')],
    analysis_level: Annotated[AnalysisLevel, typer.Argument(help='participant: run every job; group: gather metrics into group/metrics.tsv.')],
    participant_label: Annotated[Optional[list[str]], typer.Option('--participant-label', help='Participants to run (with or without "sub-"); repeat or space-separate. Default: all.')] = None,
    session_label: Annotated[Optional[list[str]], typer.Option('--session-label', help='Sessions to run (with or without "ses-"). Default: all.')] = None,
    prompt: Annotated[Optional[str], typer.Option('--prompt', help='What to do, in plain language (needs the model weights).')] = None,
    recipe: Annotated[Optional[str], typer.Option('--recipe', help='An analysis recipe (voxelprompt recipes): its prompt, inputs and longitudinal setting.')] = None,
    program: Annotated[Optional[Path], typer.Option('--program', help='Run this program file (docs/programs.md) on every job instead of a prompt.')] = None,
    suffix: Annotated[Optional[list[str]], typer.Option('--suffix', help='BIDS suffixes of the scans to feed, in order (e.g. --suffix T1w --suffix FLAIR). Default: the recipe\'s, else T1w.')] = None,
    longitudinal: Annotated[Optional[bool], typer.Option('--longitudinal/--per-session', help='One job per participant over all sessions, or one per session. Default: the recipe\'s, else per session.')] = None,
    skip_existing: Annotated[bool, typer.Option('--skip-existing', help='Skip jobs that finished ok in an earlier run (resume).')] = False,
    shard: Annotated[Optional[str], typer.Option('--shard', metavar='I/N', help='Run only shard I of N (0-based; participants dealt round-robin). Read from SLURM_ARRAY_TASK_ID/COUNT when unset.')] = None,
    step_timeout: Annotated[float, typer.Option('--step-timeout', min=0.001, metavar='SECONDS', help='Wall-clock limit per program step.')] = 600.0,
    seed: Annotated[int, typer.Option('--seed', help='Random seed (the same inputs, seed and weights give identical outputs).')] = 0,
    threads: Annotated[Optional[int], typer.Option('--threads', min=1, help='CPU threads for torch.')] = None,
    weights: Annotated[Optional[Path], typer.Option('--weights', help='Weights folder for --prompt/--recipe (default: $VOXELPROMPT_WEIGHTS, else the shipped weights/); loaded once per process.')] = None,
    device: Annotated[str, typer.Option('--device', help='auto, cpu, cuda or cuda:N (for the model).')] = 'auto',
    max_steps: Annotated[int, typer.Option('--max-steps', min=1, max=64, help='Most program steps the model may write per job.')] = 12,
    no_qc: Annotated[bool, typer.Option('--no-qc', help='Do not write QC pictures and pages.')] = False,
    quiet: Annotated[bool, typer.Option('--quiet', '-q', help='No progress on stderr.')] = False,
) -> None:
    """Run over a BIDS dataset and write a BIDS derivatives dataset (BIDS Apps conventions).

    participant: one job per participant (and session), going on past failures; every
    job's status (ok / failed with reason / skipped) lands in OUTPUT_DIR/voxelprompt_status.tsv.
    Exit code 6 when any job failed. group: one tidy TSV of every job's metrics.
    """
    from vpcli.bids import gather_group, parse_shard, plan_jobs, run_participants, select_shard
    from vpcli.errors import BadInputError, ExitCode

    log = stderr_logger(quiet)

    if analysis_level is AnalysisLevel.group:
        path, flagged = gather_group(output_dir)
        log(f'wrote {path}')
        jobs = sorted({(participant, session) for participant, session, _ in flagged})
        if jobs:
            names = ', '.join(p if s == 'n/a' else f'{p}/{s}' for p, s in jobs)
            print(f'voxelprompt: warning: quality control flagged {len(jobs)} job(s): {names} '
                  f'(see {output_dir / "group" / "qc_flagged.tsv"})', file=sys.stderr, flush=True)
        return

    from vpcli.recipes import get_recipe

    rebuilt = ['voxelprompt', 'bids', str(bids_dir), str(output_dir), analysis_level.value]
    for flag, values in (('--participant-label', participant_label),
                         ('--session-label', session_label), ('--suffix', suffix)):
        rebuilt += [item for value in values or [] for item in (flag, value)]
    for flag, value in (('--prompt', prompt), ('--recipe', recipe), ('--program', program),
                        ('--shard', shard), ('--weights', weights)):
        rebuilt += [flag, str(value)] if value else []
    if longitudinal is not None:
        rebuilt.append('--longitudinal' if longitudinal else '--per-session')
    rebuilt += ['--step-timeout', f'{step_timeout:g}', '--seed', str(seed), '--device', device,
                '--max-steps', str(max_steps)] + (['--threads', str(threads)] if threads else [])
    rebuilt += [flag for flag, on in (('--skip-existing', skip_existing), ('--no-qc', no_qc),
                                      ('--quiet', quiet)) if on]
    command_line = invoked_command_line('bids', rebuilt)

    chosen = [name for name, value in (('--prompt', prompt), ('--recipe', recipe),
                                       ('--program', program)) if value]
    if len(chosen) != 1:
        raise BadInputError('give exactly one of --prompt, --recipe or --program')
    the_recipe = get_recipe(recipe) if recipe else None
    suffixes = tuple(suffix) if suffix else (the_recipe.inputs if the_recipe else ('T1w',))
    if longitudinal is None:
        longitudinal = bool(the_recipe and the_recipe.longitudinal)

    from vpcli.batch import program_job_runner, write_job
    from vpcli.program_run import RunSettings

    use_threads(threads)
    jobs = plan_jobs(bids_dir, suffixes=suffixes,
                     participant_labels=_split(participant_label),
                     session_labels=_split(session_label), longitudinal=longitudinal)
    index, count = parse_shard(shard)
    jobs = select_shard(jobs, index, count)
    log(f'{len(jobs)} job(s) in shard {index}/{count} of {bids_dir}')

    program_weights: dict = {}

    def settings_for(job):
        return RunSettings(step_timeout_s=step_timeout, seed=seed, command_line=command_line,
                           mode='exec' if program else 'run', prompt=prompt or (
                               the_recipe.prompt if the_recipe else None), **program_weights)

    if program:  # a run's script.py needs the vision network: loaded once
        vision, weight_fields = load_vision_for(program, weights, device, log)
        program_weights.update(weight_fields)
        make_run = program_job_runner(program, settings_for, vision=vision)
    else:
        from vpcli.agent.prompt_run import agent_job_runner  # loads the model once per process
        from vpcli.devices import resolve_device
        chosen_device = resolve_device(device)
        make_run = agent_job_runner(prompt or the_recipe.prompt, settings_for, weights=weights,
                                    device=chosen_device, max_steps=max_steps)
        log(weights_line(make_run.bundle, chosen_device))

    def process(job, out):
        write_job(job, out, bids_dir, make_run(job), qc=not no_qc)

    def report(record):
        detail = f' ({record.reason})' if record.reason else ''
        log(f'{record.participant_id} {record.session_id}: {record.status}{detail}')

    records = run_participants(bids_dir, output_dir, jobs, process,
                               skip_existing=skip_existing, on_status=report)
    failed = [r for r in records if r.status == 'failed']
    log(f'{len(records) - len(failed)} ok or skipped, {len(failed)} failed; '
        f'status in {output_dir / "voxelprompt_status.tsv"}')
    if failed:
        raise typer.Exit(ExitCode.PARTIAL)


def _split(values: Optional[list[str]]) -> list[str]:
    """Accept repeated options and space-separated lists (BIDS Apps habit)."""
    return [item for value in values or [] for item in value.split()]
