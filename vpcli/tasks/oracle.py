"""Ground truth in place of the vision network: the oracle vision and the task world of a case.

:class:`SynthWorld` wraps a :class:`vpcli.synth.cases.SynthCase`: it turns target texts
into ground-truth masks (anatomy: the target's label set on a scan's own label map, plus,
for lobes and territories, the white matter whose nearest cortical parcel belongs to the
target; lesions: the instances a lesion description picks out), measures each lesion's
descriptor tags with the library's own functions (location, signal, enhancement,
diffusion), and lists which anatomical targets are present.

:class:`OracleVision` answers the library's ``encode``/``segment`` from a world, so target
programs run in the real sandbox without a trained network (the oracle check), and the
training engineer gets segmentation targets from the same place.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import numpy as np

from vpcli.library.lesion_choice import (LOCATION_REGIONS, TERRITORY_REGIONS, position_tags,
                                         signal_tags)
from vpcli.tasks.categories import TaskPlan
from vpcli.tasks.ontology import AnatomyTarget, LesionQuery, load_ontology, parse_target
from vpcli.tasks.roi import matching_lesions
from vpcli.tasks.world import CaseInfo, CaseRequest, LesionInfo, ScanInfo

if TYPE_CHECKING:
    from vpcli.synth.cases import SynthCase
    from vpcli.volumes import Mask, Scan

#: fewest voxels (on every session's first-scan grid) for an anatomical target to be asked about
MIN_TARGET_VOXELS = 8


def _voxel_spacing_mm(volume) -> np.ndarray:
    from vpcli.volumes import voxel_spacing_mm
    return voxel_spacing_mm(volume.geometry)


class SynthWorld:
    """Ground truth of one synthetic case, addressed by target text.

    Args:
        case: The synthesised case.
    """

    def __init__(self, case: 'SynthCase'):
        self.case = case
        self.ontology = load_ontology()
        self.vocabulary = case.vocabulary
        self.scan_index = {scan.name: i for i, scan in enumerate(case.scans)}
        self.session_labels = list(case.sessions)
        # per-world caches (not functools caches: those would keep every world alive)
        self._label_arrays: dict[int, np.ndarray] = {}
        self._nearest: dict[int, np.ndarray] = {}
        self._regions: dict[tuple, tuple[np.ndarray, ...]] = {}
        self._lesions: tuple[LesionInfo, ...] | None = None
        self._cortical = [i for i in self.vocabulary.ids
                          if self.vocabulary.name(i).startswith('ctx-')]

    # ----- scans and grids --------------------------------------------------------------

    def scan(self, name: str) -> 'Scan':
        """The input scan called ``name``."""
        return self.case.scans[self.scan_index[name]]

    def session_of(self, name: str) -> int:
        """Session index (0-based) of a scan."""
        return self.session_labels.index(self.scan(name).session)

    def first_scan(self, session: int) -> 'Scan':
        """The first scan of a session (its grid is the session's mask grid)."""
        return self.case.scans[self.case.scan_indices(self.session_labels[session])[0]]

    def labels(self, index: int) -> np.ndarray:
        """Vocabulary label map on scan ``index``'s grid."""
        if index not in self._label_arrays:
            self._label_arrays[index] = self.case.labels[index].tensor[0].numpy()
        return self._label_arrays[index]

    def _nearest_parcel(self, index: int) -> np.ndarray:
        """Per voxel, the label id of the nearest cortical parcel (world mm distance)."""
        if index not in self._nearest:
            from scipy import ndimage
            labels = self.labels(index)
            cortical = np.isin(labels, self._cortical)
            if not cortical.any():
                self._nearest[index] = np.zeros_like(labels)
            else:
                _, nearest = ndimage.distance_transform_edt(
                    ~cortical, sampling=_voxel_spacing_mm(self.case.labels[index]),
                    return_indices=True)
                self._nearest[index] = labels[tuple(nearest)]
        return self._nearest[index]

    def _ids(self, names) -> list[int]:
        known = {self.vocabulary.name(i): i for i in self.vocabulary.ids}
        return [known[n] for n in names if n in known]

    # ----- masks -----------------------------------------------------------------------

    def anatomy_array(self, target: AnatomyTarget, index: int) -> np.ndarray:
        """Boolean ground truth of an anatomical target on scan ``index``'s grid."""
        labels = self.labels(index)
        inside = np.isin(labels, self._ids(target.labels))
        if target.white_matter:
            sides = ('Left', 'Right') if target.side in ('bilateral', 'midline') else \
                (target.side.title(),)
            white = np.isin(labels, self._ids(f'{s}-Cerebral-White-Matter' for s in sides))
            parcels = self._ids(target.cortical_labels)
            inside |= white & np.isin(self._nearest_parcel(index), parcels)
        return inside

    def lesion_array(self, query: LesionQuery, index: int) -> np.ndarray:
        """Boolean ground truth of the lesion(s) a description picks out, on scan ``index``'s grid."""
        ids = [lesion.id for lesion in matching_lesions(query, self.lesions())]
        return np.isin(self.case.lesion_maps[index].tensor[0].numpy(), ids)

    def mask_on(self, target: str, scan_name: str) -> 'Mask':
        """Ground-truth mask of a target text on the grid of scan ``scan_name``.

        Raises:
            KeyError: The text names nothing in the ontology.
        """
        import torch

        from vpcli.volumes import Mask
        index = self.scan_index[scan_name]
        meaning = parse_target(target)
        if isinstance(meaning, AnatomyTarget):
            inside = self.anatomy_array(meaning, index)
        else:
            inside = self.lesion_array(meaning, index)
        scan = self.case.scans[index]
        session = self.case.scan_indices(scan.session)
        sources = tuple(s for i in session for s in self.case.scans[i].sources)
        volume = scan.volume.new(torch.from_numpy(inside[None].copy()), keep_labels=False)
        return Mask(volume=volume, sources=sources, description=target)

    def mask(self, target: str, session: int) -> 'Mask':
        """Ground-truth mask of a target text on the grid of the session's first scan."""
        return self.mask_on(target, self.first_scan(session).name)

    # ----- what prompts may know -------------------------------------------------------

    def present_targets(self) -> frozenset[str]:
        """Anatomical targets with at least :data:`MIN_TARGET_VOXELS` voxels in every session."""
        present = None
        for session in range(len(self.session_labels)):
            index = self.scan_index[self.first_scan(session).name]
            values, counts = np.unique(self.labels(index), return_counts=True)
            count_of = {self.vocabulary.name(int(v)): int(c) for v, c in zip(values, counts)
                        if int(v) in self.vocabulary}
            here = {name for name, target in self.ontology.targets.items()
                    if sum(count_of.get(label, 0) for label in target.labels) >= MIN_TARGET_VOXELS}
            present = here if present is None else present & here
        return frozenset(present or ())

    def lesions(self) -> tuple[LesionInfo, ...]:
        """The case's lesions that are visible (non-empty) on every session's first-scan grid,
        with descriptor tags measured on their ground truth by the library's functions."""
        if self._lesions is None:
            self._lesions = self._measure_lesions()
        return self._lesions

    def _measure_lesions(self) -> tuple[LesionInfo, ...]:
        import torch

        from vpcli.library.morphometry import volume
        from vpcli.volumes import Mask
        first = [self.scan_index[self.first_scan(s).name] for s in range(len(self.session_labels))]
        infos = []
        for info in self.case.lesions_in(self.session_labels[0]):
            maps = [self.case.lesion_maps[i].tensor[0].numpy() == info.instance for i in first]
            if not all(m.any() for m in maps):
                continue
            scan0 = self.case.scans[first[0]]
            mask = Mask(scan0.volume.new(torch.from_numpy(maps[0][None].copy()), keep_labels=False),
                        scan0.sources, 'lesion')
            tags = position_tags(self._largest_overlap(maps[0], LOCATION_REGIONS, first[0]),
                                 self._largest_overlap(maps[0], TERRITORY_REGIONS, first[0]))
            session_scans = [self.case.scans[i] for i in self.case.scan_indices(self.session_labels[0])]
            tags.update(signal_tags(mask, [scan0] + [s for s in session_scans if s is not scan0]))
            infos.append(LesionInfo(info.instance, self.ontology.class_of_synth(info.lesion_class),
                                    tags, volume(mask)))
        return tuple(infos)

    def _region_arrays(self, regions: tuple[str, ...], index: int) -> tuple[np.ndarray, ...]:
        if (regions, index) not in self._regions:
            self._regions[(regions, index)] = tuple(
                self.anatomy_array(self.ontology.targets[r], index) for r in regions)
        return self._regions[(regions, index)]

    def _largest_overlap(self, lesion: np.ndarray, regions: tuple[str, ...], index: int) -> str | None:
        """The region holding the largest part of ``lesion`` (first on a tie), or None.

        The same rule as the library's ``location`` (which the location task's program
        runs); computed on arrays here because every lesion of every case is tagged.
        """
        overlaps = [int((lesion & region).sum()) for region in self._region_arrays(regions, index)]
        best = int(np.argmax(overlaps))
        return regions[best] if overlaps[best] > 0 else None

    def case_info(self) -> CaseInfo:
        """What prompt and program writing may know about the case."""
        scans = tuple(ScanInfo(scan.name, scan.modality, self.session_labels.index(scan.session),
                               scan.date.isoformat() if scan.date else None, scan.contrast)
                      for scan in self.case.scans)
        change = None
        if self.case.anatomy_changes:
            change = {'atrophy': 'atrophy', 'ventricular_enlargement': 'enlargement'}.get(
                self.case.anatomy_changes[0].kind)
        return CaseInfo(scans, self.lesions(), self.present_targets(), change, self.measurable)

    def measurable(self, target: str, scan_name: str) -> bool:
        """Whether the target's session mask, resampled onto ``scan_name``, has voxels."""
        from vpcli.library.registry import registry
        session = self.session_of(scan_name)
        mask = self.mask(target, session)
        if scan_name != self.first_scan(session).name:
            mask = registry()['resample_mask'].func(mask, self.scan(scan_name))
        return bool(mask.volume.tensor.bool().any())


# -----------------------------------------------------------------------------
# the oracle vision network
# -----------------------------------------------------------------------------

class OracleVision:
    """Answers ``encode``/``segment`` from ground truth (drop-in for the vision network).

    ``segment`` returns, per session of the encoded scans, the ground-truth mask of the
    target text on the grid of the session's first encoded scan, like the network does.

    Args:
        world: The case's ground truth.
    """
    training = False

    def __init__(self, world: SynthWorld):
        self.world = world

    def encode(self, scans: Sequence['Scan'], phi=None):
        """An encoding that holds only the scans (no features are computed)."""
        import torch

        from vpcli.vision.model import Encoding
        count = len(scans)
        return Encoding(scans=tuple(scans), prepared=(), features=[], geometries=[],
                        embeddings=torch.zeros(count, 1), phi=torch.zeros(count, 1))

    def segment(self, encoding, target: str, phi=None):
        """Ground-truth mask(s) of ``target``: one per session, oldest first."""
        from vpcli.errors import ProgramError
        from vpcli.vision.model import session_groups
        masks = []
        for group in session_groups(encoding.scans):
            try:
                masks.append(self.world.mask_on(target, encoding.scans[group[0]].name))
            except KeyError:
                raise ProgramError(f'segment: the oracle does not know the target "{target}"') from None
        return masks[0] if len(masks) == 1 else tuple(masks)


# -----------------------------------------------------------------------------
# making a case for a task plan
# -----------------------------------------------------------------------------

def synth_arguments(request: CaseRequest) -> dict:
    """:func:`vpcli.synth.cases.sample_case` keyword arguments for a case request."""
    return dict(modalities=list(request.sessions[0]), longitudinal=len(request.sessions) > 1,
                lesions=request.lesions if request.lesions else False,
                contrast_pair=False, diffusion_pair=False)


def make_world(plan: TaskPlan, rng: np.random.Generator, split: str = 'train',
               training_resolution=True, artefacts: bool = True) -> tuple[CaseInfo, SynthWorld]:
    """Synthesise the case a task plan asks for; returns what the writer needs and the truth."""
    from vpcli.synth.cases import sample_case
    case = sample_case(rng, split=split, training_resolution=training_resolution,
                       artefacts=artefacts, **synth_arguments(plan.request))
    world = SynthWorld(case)
    return world.case_info(), world
