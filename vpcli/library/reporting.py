"""Reporting: what a program hands back (numbers, the answer, volumes to write, feedback).

These functions take the run context first (hidden from programs, passed by the
sandbox); they only record into it. The runner writes everything at the end of a run,
atomically (``docs/outputs.md``).
"""

from __future__ import annotations

import math
from typing import Any

from vpcli.errors import ProgramError
from vpcli.library.context import FeedbackItem, OutputValue, RunContext, SavedVolume
from vpcli.library.registry import agent_function
from vpcli.volumes import Mask, Scan, union_sources, value_text

#: longest name or unit text accepted by ``output`` / ``save``
MAX_NAME_CHARS = 200
#: most numbers in one ``output`` value (a coordinate, a bounding box)
MAX_OUTPUT_ITEMS = 64


def _check_name(function: str, what: str, text: Any, allow_empty: bool = False) -> str:
    if not isinstance(text, str):
        raise ProgramError(f'{function}: {what} must be text, not {type(text).__name__}')
    if not text.strip() and not allow_empty:
        raise ProgramError(f'{function}: {what} must not be empty')
    if len(text) > MAX_NAME_CHARS or '\n' in text:
        raise ProgramError(f'{function}: {what} must be one line of at most {MAX_NAME_CHARS} '
                           f'characters')
    return text.strip()


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@agent_function('reporting', returns='None')
def output(context: RunContext, name: str, value, unit: str) -> None:
    """Record a result number for ``metrics.json``, with its unit and source scans.

    Args:
        name: What the number is (``"left hippocampus volume"``).
        value: A number, a tuple of numbers (e.g. a point in scanner RAS mm) or text.
        unit: Its unit: ``"mL"``, ``"mm"``, ``"scanner RAS mm"``, ``"%"``, ``"days"``,
            ``"ratio"``, or ``""`` for text.

    Returns:
        None. The value is recorded with the input scans it was computed from.
    """
    name = _check_name('output', 'name', name)
    unit = _check_name('output', 'unit', unit, allow_empty=True)
    if isinstance(value, (list, tuple)):
        if not value or len(value) > MAX_OUTPUT_ITEMS or not all(_is_number(v) for v in value):
            raise ProgramError(f'output "{name}": a tuple value must hold 1 to {MAX_OUTPUT_ITEMS} '
                               f'numbers')
        value = tuple(float(v) if isinstance(v, float) else v for v in value)
    elif isinstance(value, str):
        _check_name('output', 'text value', value)
    elif not _is_number(value):
        raise ProgramError(f'output "{name}": value must be a number, a tuple of numbers or text, '
                           f'not {type(value).__name__}')
    context.outputs.append(OutputValue(name=name, value=value, unit=unit,
                                       sources=tuple(context.call_sources), step=context.step,
                                       masks=tuple(context.call_masks)))


@agent_function('reporting', returns='None')
def answer(context: RunContext, text: str) -> None:
    """Give (part of) the text answer to the prompt; several calls join with new lines.

    Args:
        text: The answer, e.g. ``f"The left hippocampus measures {v:.2f} mL."``.

    Returns:
        None.
    """
    if _is_number(text):
        text = str(text)
    if not isinstance(text, str):
        raise ProgramError(f'answer: needs text, not {type(text).__name__}')
    if len(text) > 10_000:
        raise ProgramError('answer: text longer than 10000 characters')
    context.answers.append(text)


@agent_function('reporting', returns='None')
def save(context: RunContext, volume, name: str) -> None:
    """Write a mask or image to the run's output folder as NIfTI.

    Args:
        volume: A mask (written as 0/1 uint8) or an image (e.g. from ``crop``/``remove``).
        name: What it is, in words; the file is named from it (``"grey matter"`` ->
            ``grey_matter.nii.gz``).

    Returns:
        None. The file is written at the end of the run, in the geometry of the scan the
        volume belongs to.
    """
    name = _check_name('save', 'name', name)
    if isinstance(volume, Mask):
        kind = 'mask'
    elif isinstance(volume, Scan):
        kind = 'image'
    else:
        raise ProgramError(f'save "{name}": needs a mask or an image, not {type(volume).__name__}')
    context.saved.append(SavedVolume(name=name, volume=volume,
                                     sources=union_sources(context.call_sources, volume.sources),
                                     step=context.step, kind=kind))


def feedback_text(value: Any, unit: str | None = None) -> str:
    """The text ``read`` shows for a value: numbers with 6 significant digits and unit.

    Masks show their description, voxel count and volume in mL; scans their one-line
    description (name, modality, date, session).
    """
    if isinstance(value, Mask):
        from vpcli.library.morphometry import volume as mask_volume
        count = int(value.volume.tensor.bool().sum())
        origin = ', '.join(s.name for s in value.sources) or 'no scan'
        return (f'mask "{value.description}" from {origin}: {count} voxels, '
                f'{value_text(mask_volume(value), 6)} mL')
    if isinstance(value, Scan):
        return value.describe()
    text = value_text(value, 6)
    if unit and (_is_number(value) or (isinstance(value, (list, tuple)) and value
                                       and all(_is_number(v) for v in value))):
        if isinstance(value, float) and not math.isfinite(value):
            return text
        text = f'{text} {unit}'
    return text


@agent_function('reporting', returns='str, feedback shown to the model')
def read(context: RunContext, x) -> FeedbackItem:
    """Show a value to the language model (its next step can use what it read).

    Args:
        x: Any value: a number (shown with its unit when known), text, a tuple, a mask
            (description, voxels, mL), a scan, or an encoding (shown as embeddings).

    Returns:
        The feedback item (text, and embeddings for encodings), also appended to the
        step's feedback.
    """
    to_feedback = getattr(type(x), 'to_feedback', None)
    if callable(to_feedback):
        produced = x.to_feedback()
        if isinstance(produced, FeedbackItem):
            item = produced
        elif isinstance(produced, tuple) and len(produced) == 2:
            item = FeedbackItem(text=str(produced[0]), embeddings=produced[1])
        else:
            item = FeedbackItem(text=str(produced))
    else:
        units = tuple(getattr(context, 'call_units', ()) or ())
        item = FeedbackItem(text=feedback_text(x, units[0] if units else None))
    context.feedback.append(item)
    return item
