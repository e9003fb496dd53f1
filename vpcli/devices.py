"""Choosing the torch device (``--device auto|cpu|cuda[:N]``)."""

from __future__ import annotations

import re

from vpcli.errors import BadInputError


def resolve_device(device: str) -> str:
    """The torch device for a ``--device`` value: ``auto`` is CUDA when present, else CPU.

    CUDA is always returned with its index (``auto`` and ``cuda`` give torch's current
    CUDA device, normally ``cuda:0``), so what a run records names the GPU it used.

    Raises:
        BadInputError: Unknown value, or CUDA asked for where there is none.
    """
    import torch

    if device == 'auto':
        if not torch.cuda.is_available():
            return 'cpu'
        device = 'cuda'
    if device == 'cpu':
        return device
    if not re.fullmatch(r'cuda(:\d+)?', device):
        raise BadInputError(f'--device {device!r}: expected auto, cpu, cuda or cuda:N')
    if not torch.cuda.is_available():
        raise BadInputError(f'--device {device}: CUDA is not available on this machine')
    if ':' in device and int(device.split(':')[1]) >= torch.cuda.device_count():
        raise BadInputError(f'--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s)')
    return device if ':' in device else f'cuda:{torch.cuda.current_device()}'
