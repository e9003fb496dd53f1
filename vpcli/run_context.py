"""The state of one run that library functions report into.

A :class:`RunContext` is created per program run (``voxelprompt exec`` / ``run``). The
sandbox passes it to registered functions that declare a ``context`` parameter
(reporting and vision functions); everything the run writes to disk is collected here
first, so the outputs can be written atomically at the end.

It lives outside :mod:`vpcli.library` so that the vision network can describe its feedback
without loading the library package (which loads the vision network); ``vpcli.library.context``
re-exports it.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from vpcli.volumes import Mask, Scan, SourceRef


@dataclasses.dataclass
class OutputValue:
    """One ``output(name, value, unit)`` call: a number (or tuple of numbers) with its unit."""
    name: str
    value: Any
    unit: str
    sources: tuple[SourceRef, ...]
    step: int
    #: descriptions of the masks the value was computed from
    masks: tuple[str, ...] = ()


@dataclasses.dataclass
class SavedVolume:
    """A volume the run writes: every ``save`` and every segmentation the program made."""
    name: str
    volume: Mask | Scan
    sources: tuple[SourceRef, ...]
    step: int
    kind: str  # 'mask' | 'image'


@dataclasses.dataclass
class FeedbackItem:
    """What ``read(x)`` hands back to the language model: text, or encodings as embeddings."""
    text: str
    embeddings: Any = None  # torch.Tensor of shape (n_scans, width) for encodings, else None


@dataclasses.dataclass
class RunContext:
    """Everything a run has produced so far.

    Attributes:
        scans: The input scans (``img0``, ``img1``, ...).
        outputs: ``output`` values in call order.
        answers: ``answer`` texts in call order.
        saved: Volumes to write (saved and segmented), in call order.
        feedback: ``read`` results of the step being run (the agent loop collects them).
        call_sources: Sources of the arguments of the call being made (set by the sandbox
            from its data-flow tracking before each context call).
        call_units: Units of the arguments of the call being made, where known (set by
            the sandbox alongside ``call_sources``).
        call_masks: Descriptions of the masks the arguments of the call being made were
            computed from (set by the sandbox alongside ``call_sources``).
        step: Index of the step being run (0-based).
        vision: The loaded vision network, or None when the run has none.
        device: Torch device name the run computes on.
    """
    scans: list[Scan]
    outputs: list[OutputValue] = dataclasses.field(default_factory=list)
    answers: list[str] = dataclasses.field(default_factory=list)
    saved: list[SavedVolume] = dataclasses.field(default_factory=list)
    feedback: list[FeedbackItem] = dataclasses.field(default_factory=list)
    call_sources: tuple[SourceRef, ...] = ()
    call_units: tuple = ()
    call_masks: tuple[str, ...] = ()
    step: int = 0
    vision: Any = None
    device: str = 'cpu'
