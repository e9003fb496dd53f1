"""`--device` resolution: CUDA is recorded with its index."""

from __future__ import annotations

import pytest
import torch

from vpcli.devices import resolve_device
from vpcli.errors import BadInputError


def test_cpu_and_auto_without_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    assert resolve_device('cpu') == 'cpu'
    assert resolve_device('auto') == 'cpu'
    with pytest.raises(BadInputError, match='CUDA is not available'):
        resolve_device('cuda')


def test_cuda_is_named_with_its_index(monkeypatch):
    # this machine may have no GPU: only torch's queries are replaced, not a device
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    monkeypatch.setattr(torch.cuda, 'device_count', lambda: 2)
    monkeypatch.setattr(torch.cuda, 'current_device', lambda: 1)
    assert resolve_device('auto') == 'cuda:1'
    assert resolve_device('cuda') == 'cuda:1'
    assert resolve_device('cuda:0') == 'cuda:0'
    with pytest.raises(BadInputError, match='has 2 CUDA device'):
        resolve_device('cuda:2')
    with pytest.raises(BadInputError, match='expected auto, cpu, cuda or cuda:N'):
        resolve_device('gpu')
