"""What a task knows about its case before and after the scans are made.

A task is planned first (category, variant, what scans and lesions it needs: a
:class:`CaseRequest`), then the case is synthesised, then the prompt and target program are
written against a :class:`CaseInfo` (scan list, lesions with their descriptor tags, which
anatomical targets are present). Expected outputs are computed last, from the case's
ground truth (:class:`GroundTruth`). Only :class:`GroundTruth` touches voxels; the rest is
plain text and numbers, so prompt and program writing is testable without scans.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Protocol


@dataclasses.dataclass(frozen=True)
class CaseRequest:
    """What a task needs from the synthesiser.

    Attributes:
        sessions: Modalities per session, in scan order (``(('T1w', 'FLAIR'),)``;
            :data:`~vpcli.volumes.POST_CONTRAST` for a post-contrast T1w, which then shares the grid of
            the session's pre-contrast T1w, and a DWI/ADC pair shares one grid too).
        lesions: Number of lesions to synthesise (0 for none).
        change: Longitudinal change between sessions: ``growth``, ``shrinkage`` (lesions),
            ``atrophy``, ``enlargement`` (ventricles), or None.
        low_resolution: Make the case at training resolution (cheap; the oracle check).
    """
    sessions: tuple[tuple[str, ...], ...]
    lesions: int = 0
    change: str | None = None
    low_resolution: bool = True


@dataclasses.dataclass(frozen=True)
class ScanInfo:
    """One input scan as the agent sees it.

    Attributes:
        name: Variable name (``img0``...).
        modality: ``T1w``, ``T2w``, ``FLAIR``, ``PD``, ``GRE``, ``DWI``, ``ADC`` or ``CT``.
        session: Session index (0-based, in time order).
        date: Acquisition date (ISO ``YYYY-MM-DD``) or None.
        contrast: True for a post-contrast acquisition.
    """
    name: str
    modality: str
    session: int
    date: str | None = None
    contrast: bool = False

    def describe(self, date: bool = True, session: bool = True) -> str:
        """The state line the agent gets (:func:`vpcli.volumes.state_line`; ``date=False``
        or ``session=False`` writes that item as unknown)."""
        from vpcli.volumes import state_line
        return state_line(self.name, self.modality, self.contrast, self.date if date else None,
                          f'{self.session + 1:02d}' if session else None)


@dataclasses.dataclass(frozen=True)
class LesionInfo:
    """One lesion of a case with the descriptor tags measured on its ground truth.

    Attributes:
        id: Instance id in the case's lesion maps.
        class_key: Leaf lesion class (:mod:`vpcli.tasks.ontology`).
        tags: Descriptor kind -> canonical value (side, lobe, territory, signal,
            enhancement, diffusion); a kind is missing when it does not apply.
        volume_ml: Volume in the first session, mL (orders lesions for size rank).
    """
    id: int
    class_key: str
    tags: dict[str, str]
    volume_ml: float


@dataclasses.dataclass(frozen=True)
class CaseInfo:
    """What prompt and program writing may know about a case.

    Attributes:
        scans: Input scans in order.
        lesions: Lesions (empty for a healthy case).
        present: Canonical names of anatomical targets that are non-empty in every session.
        change: The longitudinal change the case was made with, or None.
        measurable: ``(target text, scan name) -> bool``: whether the target's session mask,
            resampled onto that scan, still has voxels (a small lesion can vanish on a
            coarse grid). None means always (cases described without voxels).
    """
    scans: tuple[ScanInfo, ...]
    lesions: tuple[LesionInfo, ...] = ()
    present: frozenset[str] = frozenset()
    change: str | None = None
    measurable: Callable[[str, str], bool] | None = dataclasses.field(default=None, compare=False,
                                                                      repr=False)

    def can_measure(self, target: str, scan_name: str) -> bool:
        """See ``measurable``."""
        return self.measurable is None or self.measurable(target, scan_name)

    @property
    def sessions(self) -> list[list[ScanInfo]]:
        """Scans grouped by session, in session order."""
        count = 1 + max(s.session for s in self.scans)
        return [[s for s in self.scans if s.session == i] for i in range(count)]


class GroundTruth(Protocol):
    """Ground truth of a synthesised case (implemented in :mod:`vpcli.tasks.oracle`)."""

    def scan(self, name: str):
        """The input :class:`~vpcli.volumes.Scan` called ``name``."""

    def mask(self, target: str, session: int):
        """Ground-truth :class:`~vpcli.volumes.Mask` of a target text (canonical anatomy name
        or lesion description) in a session, on the grid of the session's first scan."""
