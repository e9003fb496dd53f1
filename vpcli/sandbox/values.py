"""Program values with their data-flow sources, and the errors that stop a step."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

from vpcli.volumes import Mask, Scan, SourceRef


# -----------------------------------------------------------------------------
# values
# -----------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Tracked:
    """A program value with the input scans and the masks it derives from.

    Attributes:
        value: The Python value.
        sources: Input scans it was computed from.
        unit: Its unit when known (from the library function that returned it).
        items: Per-item tracking for lists/tuples whose items differ in sources.
        masks: Descriptions of the masks it was computed from (for quality control of
            each measurement, docs/qc.md).
    """
    value: Any
    sources: tuple[SourceRef, ...] = ()
    unit: str | None = None
    items: tuple['Tracked', ...] | None = None
    masks: tuple[str, ...] = ()

    def item(self, index: int) -> 'Tracked':
        """Tracking of one item of a list/tuple value."""
        if self.items is not None:
            return self.items[index]
        return Tracked(self.value[index], self.sources, masks=self.masks)


_NUMBER = (int, float)
_PRIMITIVE = (int, float, str, bool, type(None), dt.date)


def _intrinsic_sources(value: Any) -> tuple[SourceRef, ...]:
    """Sources a volume object carries itself."""
    if isinstance(value, (Scan, Mask)):
        return tuple(value.sources)
    return tuple(getattr(value, 'sources', ()) or ()) if hasattr(value, 'to_feedback') else ()


def _intrinsic_masks(value: Any) -> tuple[str, ...]:
    """The description of a mask value (or of each mask of a per-session tuple)."""
    if isinstance(value, Mask):
        return (value.description,)
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, Mask) for v in value[:16]):
        return union_masks(*((v.description,) for v in value[:16]))
    return ()


def union_masks(*groups: tuple[str, ...]) -> tuple[str, ...]:
    """Mask descriptions of several values, each once, in first-seen order."""
    return tuple(dict.fromkeys(m for group in groups for m in group))


def _unit_of(returns: str) -> str | None:
    """The unit in a registry ``returns`` text: ``"float, mL"`` -> ``mL``."""
    if ',' not in returns:
        return None
    unit = returns.rsplit(',', 1)[1].strip()
    return unit if unit and len(unit) <= 24 else None


class _LimitError(Exception):
    """An operation would exceed a size limit (refused statically, failed at run time)."""


class _StepTimeout(BaseException):
    """Raised into a step when its time budget is spent.

    A ``BaseException`` so that library code catching ``Exception`` cannot swallow it.
    """
