"""A prompt-driven run: the agent writes the program step by step, the sandbox runs it.

Used by ``voxelprompt run`` (one run) and ``voxelprompt bids`` (the model is loaded once per
process, then every job reuses it). The steps run through :class:`vpcli.program_run.ProgramRun`,
so outputs, ``metrics.json`` and atomic writing are those of ``voxelprompt exec``; the
saved ``script.py`` starts with the ``PHI = [...]`` constant step, so
``voxelprompt exec script.py SCANS -o OUT`` replays the run exactly.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Sequence

from vpcli.errors import ProgramError

#: metrics.json key of the agent's record
AGENT_KEY = 'agent'


class ProgramRunExecutor:
    """The agent loop's executor over a :class:`~vpcli.program_run.ProgramRun`."""

    def __init__(self, program_run, log: Callable[[str], None] | None = None):
        self.program_run = program_run
        self.log = log or (lambda message: None)

    def define(self, name: str, value: Any) -> None:
        from vpcli.sandbox import Tracked
        self.program_run.sandbox.namespace[name] = Tracked(value, ())

    def run(self, code: str) -> list:
        record = self.program_run.run_step(code)
        self.log(f'step {record.step.index} ran in {record.seconds:.2f} s')
        return list(record.feedback)


def check_prompt(prompt: str) -> None:
    """Refuse, before any model is loaded, a prompt the rule-based gate refuses.

    The same gate runs again inside :meth:`vpcli.agent.loop.Agent.run`; checking first
    means a refused prompt costs no weights loading and no scan reading.

    Raises:
        RefusedError: the prompt is out of scope (exit code 4).
    """
    from vpcli.agent.refusal import gate_decision, refusal_message
    from vpcli.errors import RefusedError

    decision = gate_decision(prompt)
    if decision is not None:
        raise RefusedError(refusal_message(decision.rule, decision.matched))


def run_prompt(prompt: str, scans: Sequence, bundle, settings, *, max_steps: int | None = None,
               log: Callable[[str], None] | None = None):
    """Write and run a program for ``prompt`` over loaded scans.

    Args:
        prompt: The user's prompt.
        scans: Loaded input scans (``img0``, ...).
        bundle: Loaded weights (:func:`vpcli.weights.load_bundle`).
        settings: Run settings (seed, time limit, provenance).
        max_steps: Most program steps (default: the loop's).
        log: Progress lines.

    Returns:
        ``(program_run, agent_run)``; the program run is finished, not yet written.

    Raises:
        RefusedError: the prompt is out of scope (exit code 4); nothing ran.
        ProgramError: a step failed, or the model wrote no step (exit code 5).
    """
    from vpcli.agent.loop import DEFAULT_MAX_STEPS
    from vpcli.agent.model_text import phi_step
    from vpcli.program_run import ProgramRun, seed_everything

    log = log or (lambda message: None)
    seed_everything(settings.seed)
    program_run = ProgramRun(scans, settings, vision=bundle.vision)
    started = time.monotonic()
    record = bundle.agent.run(prompt, [scan.describe() for scan in scans],
                              [scan.name for scan in scans], ProgramRunExecutor(program_run, log),
                              max_steps=max_steps or DEFAULT_MAX_STEPS, raise_on_refusal=True)
    program_run.timings['agent_s'] = time.monotonic() - started
    if not record.steps:
        raise ProgramError('the model wrote no program step for this prompt')
    if record.phi:
        program_run.preamble = [phi_step(record.phi)]
    program_run.extra_metrics[AGENT_KEY] = {
        'prompt_read': record.read_as,
        'stopped': record.stopped,
        'steps': [{'index': s.index, 'model_text': s.model_text, 'tokens': s.tokens,
                   'generate_s': round(s.generate_seconds, 4), 'run_s': round(s.run_seconds, 4),
                   'feedback_embeddings': s.embeddings} for s in record.steps],
        'phi_calls': len(record.phi),
    }
    log(f'{len(record.steps)} step(s) written and run'
        + ('' if record.stopped else ' (step limit reached before the model stopped)'))
    return program_run, record


def agent_job_runner(prompt: str, settings_for: Callable[[Any], Any], weights=None,
                     device: str = 'cpu', max_steps: int | None = None):
    """A job runner for ``voxelprompt bids``: loads the weights once, runs ``prompt`` per job.

    Args:
        prompt: The prompt every job runs.
        settings_for: ``job -> RunSettings`` (seed, time limit, provenance).
        weights: Weights folder (None: ``$VOXELPROMPT_WEIGHTS``, else ``weights/``).
        device: A resolved torch device (``cpu``, ``cuda``, ``cuda:N``).
        max_steps: Most program steps per job.

    Returns:
        ``run(job) -> ProgramRun`` (finished, not yet written).

    Raises:
        RefusedError: the prompt is refused (before any weights are loaded).
        BadInputError: the weights folder is missing or damaged.
    """
    from vpcli.weights import load_bundle

    check_prompt(prompt)
    bundle = load_bundle(weights, device)

    def run(job):
        from vpcli.volumes import load_scans
        started = time.monotonic()
        scans = load_scans(job.inputs)
        loaded = time.monotonic() - started
        settings = settings_for(job)
        settings.weights_file = str(bundle.folder)
        settings.weights_sha256 = bundle.sha256
        settings.device = device
        program_run, _ = run_prompt(prompt, scans, bundle, settings, max_steps=max_steps)
        program_run.timings['load_s'] = loaded
        return program_run
    run.bundle = bundle
    return run


def dry_run(agent, prompt: str, scan_lines: Sequence[str], seed: int):
    """Run the agent with the dry executor (no scans; the sandbox's rules and simulated
    feedback), gate on.

    Returns:
        ``(record or None, problem or None, kind)``: kind ``ok``, ``rejected`` (the sandbox
        refused a written step or it did not parse) or ``error`` (anything else).
    """
    from vpcli.agent.loop import DryExecutor
    from vpcli.errors import VoxelPromptError
    names = [line.split(':', 1)[0].strip() for line in scan_lines]
    executor = DryExecutor(names, seed=seed, encoding_width=agent.model.config.encoding_width)
    try:
        record = agent.run(prompt, list(scan_lines), names, executor, gate=True)
    except (VoxelPromptError, SyntaxError) as error:
        return None, f'{type(error).__name__}: {error}', 'rejected'
    except Exception as error:  # noqa: BLE001 - counted and reported, not hidden
        return None, f'{type(error).__name__}: {error}', 'error'
    return record, None, 'ok'
