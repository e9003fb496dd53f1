"""The run setup the commands share: the recorded command line, torch threads, and the weights.

``run``, ``exec``, ``bids``, ``eval``, ``bench`` and ``train`` set up a run with these and
nothing else, so that a run is recorded and logged the same way whichever command made it.
Nothing heavy is imported at module level (``voxelprompt --help`` stays instant).
"""

from __future__ import annotations

import os
import sys
from typing import Any, Callable, Optional


def invoked_command_line(command: str, rebuilt: list[str]) -> list[str]:
    """The command line a run records (``RunSettings.command_line``): what was typed when this
    process was started as ``voxelprompt COMMAND ...``, else ``rebuilt`` from the options (the
    command was called in-process: tests, ``python -c``)."""
    if sys.argv[1:2] == [command]:
        return ['voxelprompt', *sys.argv[1:]]
    return rebuilt


def use_threads(threads: Optional[int]) -> None:
    """``--threads``: torch's CPU threads (left as they are when not given)."""
    if threads:
        import torch
        torch.set_num_threads(threads)


def weights_fields(bundle, device: str) -> dict:
    """The :class:`~vpcli.program_run.RunSettings` fields that record which weights a run
    used (``weights_file``, ``weights_sha256``) and the device it computed on."""
    return {'weights_file': str(bundle.folder), 'weights_sha256': bundle.sha256,
            'device': device}


def weights_line(bundle, device: str) -> str:
    """The log line naming the model a run loaded: ``weights FOLDER (SHA[:12]) on DEVICE``."""
    return f'weights {_named(bundle)} on {device}'


def load_vision_for(program: os.PathLike | str, weights: Optional[os.PathLike | str],
                    device: str, log: Callable[[str], None]) -> tuple[Any, dict]:
    """The vision network a program file needs, loaded once (``exec``, ``bids --program``).

    Returns:
        The vision network and the :func:`weights_fields` to record; ``(None, {})`` when the
        program calls neither ``encode`` nor ``segment`` (no device is chosen, no weights
        are read).

    Raises:
        BadInputError: a bad ``--device``, or a missing or damaged weights folder.
    """
    from vpcli.program_run import program_uses_vision
    if not program_uses_vision(program):
        return None, {}
    from vpcli.devices import resolve_device
    from vpcli.weights import load_bundle
    chosen = resolve_device(device)
    bundle = load_bundle(weights, chosen)
    log(f'vision network from {_named(bundle)}')
    return bundle.vision, weights_fields(bundle, chosen)


def _named(bundle) -> str:
    """How the logs name a weights folder: ``FOLDER (SHA[:12])``."""
    return f'{bundle.folder} ({bundle.sha256[:12]})'
