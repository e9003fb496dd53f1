"""Random acquisition geometries drawn from the VoxelPrompt paper's Table 2 (App. C.4).

Per modality, in-plane spacing and slice separation are uniform in the ranges below
(mm; ``None`` = isotropic, slice = in-plane). Field of view: uniform within +-15 mm of
155 x 190 x 165 mm (left-right x anterior-posterior x superior-inferior). Spacings are
clamped to at least 0.8 mm. The slice axis is axial (60 %), coronal (20 %) or
sagittal (20 %); the voxel order is a random permutation/flip consistent with it; a
small random obliquity (up to 10 degrees about each world axis, with probability 0.3)
is added.

Modalities not in Table 2 borrow a row: PD from T2-weighted, ADC from DWI (an ADC map
shares its DWI's grid), post-contrast T1 from T1-weighted.

Training resolution (:class:`TrainingResolution`): the paper sparsifies training data
(App. B.2) by sampling slice separations in [1, 6] mm or cropping the field of view. We
do both, plus a floor on in-plane spacing, so one case is cheap on a CPU.
"""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import voxel as vx

#: modality -> (in-plane range mm, slice-separation range mm or None for isotropic)
TABLE2_GEOMETRY = {
    'T1w': ((0.8, 1.2), None),
    'T2w': ((0.8, 1.0), (3.0, 5.0)),
    'FLAIR': ((0.8, 1.0), (3.0, 5.0)),
    'PD': ((0.8, 1.0), (3.0, 5.0)),          # not in Table 2: as T2-weighted
    'DWI': ((1.5, 2.5), (2.0, 3.5)),
    'ADC': ((1.5, 2.5), (2.0, 3.5)),          # not in Table 2: an ADC map shares its DWI grid
    'GRE': ((0.8, 1.2), (4.0, 6.0)),
    'SWI': ((0.8, 1.0), (1.5, 3.0)),
    'perfusion': ((1.5, 2.5), (4.0, 6.0)),
    'CT': ((0.8, 1.0), None),                 # CT (isotropic)
    'CT-thick': ((0.8, 1.0), (3.0, 6.0)),     # CT (thick slice)
}

#: field of view (mm) along left-right, anterior-posterior, superior-inferior, +- deviation
FOV_MM = (155.0, 190.0, 165.0)
FOV_DEVIATION_MM = 15.0
MIN_SPACING_MM = 0.8

#: slice axis (world axis index: 0 = x/sagittal slices, 1 = y/coronal, 2 = z/axial) weights
_SLICE_AXIS_WEIGHTS = {2: 0.6, 1: 0.2, 0: 0.2}
_AXIS_CODES = ('RL', 'AP', 'SI')


@dataclasses.dataclass(frozen=True)
class TrainingResolution:
    """How training cases are made cheap (sparsification, App. B.2).

    Attributes:
        canvas_spacing_mm: Isotropic spacing of the grid anatomy and images are
            synthesised on before each scan is resampled (partial volume) to its own grid.
        min_in_plane_mm: In-plane spacing floor for scans.
        slice_separation_mm: Range slice separation is drawn from (B.2: 1-6 mm), floored
            at ``min_in_plane_mm``.
        sparsify_probability: Probability that a scan's slice separation comes from
            ``slice_separation_mm`` instead of Table 2.
        fov_crop_probability: Probability of cropping the field of view.
        fov_crop_fraction: Range of the kept fraction of each FOV axis when cropping.
    """
    canvas_spacing_mm: float = 2.0
    min_in_plane_mm: float = 2.0
    slice_separation_mm: tuple[float, float] = (1.0, 6.0)
    sparsify_probability: float = 0.5
    fov_crop_probability: float = 0.5
    fov_crop_fraction: tuple[float, float] = (0.6, 0.9)


#: the full-resolution setting: 1 mm canvas, Table 2 geometries unchanged
FULL_RESOLUTION_CANVAS_MM = 1.0


@dataclasses.dataclass(frozen=True)
class ScanGeometrySample:
    """What :func:`sample_scan_geometry` drew (kept for tests and provenance).

    Attributes:
        table_row: Table 2 row used (``T2w``, ``CT-thick``, ...).
        in_plane_mm: In-plane spacing (mm).
        slice_mm: Slice separation (mm).
        slice_axis: World axis the slices stack along (0 = L-R, 1 = A-P, 2 = S-I).
        orientation: Voxel order, e.g. ``LIA``.
        fov_mm: Field of view along the world axes (L-R, A-P, S-I), mm.
        oblique_deg: Extra rotation about world x, y, z (degrees).
    """
    table_row: str
    in_plane_mm: float
    slice_mm: float
    slice_axis: int
    orientation: str
    fov_mm: tuple[float, float, float]
    oblique_deg: tuple[float, float, float]


def _uniform(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    return float(rng.uniform(bounds[0], bounds[1]))


def sample_scan_geometry(rng: np.random.Generator, modality: str, center_mm,
                         training: TrainingResolution | None = None,
                         table_row: str | None = None) -> tuple['vx.AcquisitionGeometry',
                                                                ScanGeometrySample]:
    """Draw one scan geometry for a modality.

    Args:
        rng: Random generator.
        modality: ``T1w``, ``T2w``, ``FLAIR``, ``PD``, ``GRE``, ``DWI``, ``ADC``, ``CT``.
        center_mm: World point (scanner RAS mm) the field of view is centred on.
        training: Training-resolution settings, or None for Table 2 as is.
        table_row: Force a Table 2 row (default: the modality's; CT picks isotropic or
            thick-slice at random).

    Returns:
        The geometry (voxel -> scanner RAS mm) and a record of the draw.
    """
    import torch
    import voxel as vx

    if table_row is None:
        table_row = modality
        if modality == 'CT':
            table_row = 'CT' if rng.random() < 0.5 else 'CT-thick'
    in_plane_range, slice_range = TABLE2_GEOMETRY[table_row]
    in_plane = max(_uniform(rng, in_plane_range), MIN_SPACING_MM)
    slice_sep = in_plane if slice_range is None else max(_uniform(rng, slice_range), MIN_SPACING_MM)
    fov = [f + rng.uniform(-FOV_DEVIATION_MM, FOV_DEVIATION_MM) for f in FOV_MM]
    if training is not None:
        in_plane = max(in_plane, training.min_in_plane_mm)
        if rng.random() < training.sparsify_probability:
            slice_sep = _uniform(rng, training.slice_separation_mm)
        slice_sep = max(slice_sep, training.min_in_plane_mm)
        if rng.random() < training.fov_crop_probability:
            fov = [f * _uniform(rng, training.fov_crop_fraction) for f in fov]

    axes = list(_SLICE_AXIS_WEIGHTS)
    slice_axis = int(rng.choice(axes, p=[_SLICE_AXIS_WEIGHTS[a] for a in axes]))
    in_plane_axes = [a for a in range(3) if a != slice_axis]
    if rng.random() < 0.5:
        in_plane_axes.reverse()
    # voxel order: the two in-plane axes then the slice axis, or the slice axis first
    order = in_plane_axes + [slice_axis] if rng.random() < 0.7 else [slice_axis] + in_plane_axes
    orientation = ''.join(_AXIS_CODES[a][int(rng.integers(2))] for a in order)
    oblique = tuple(float(rng.uniform(-10, 10)) if rng.random() < 0.3 else 0.0 for _ in range(3))

    spacing_world = [slice_sep if a == slice_axis else in_plane for a in range(3)]
    shape = [max(1, int(math.ceil(fov[a] / spacing_world[a]))) for a in order]
    spacing_voxel = torch.tensor([spacing_world[a] for a in order], dtype=torch.float32)
    geometry = vx.geometry_from_spacing(torch.Size(shape), spacing_voxel, orientation,
                                        space='voxel')
    if any(oblique):
        geometry = geometry.rotate(torch.tensor(oblique), space="world")
    geometry = geometry.shift_to_point(torch.as_tensor(center_mm, dtype=geometry.tensor.dtype))
    record = ScanGeometrySample(table_row, in_plane, slice_sep, slice_axis, orientation,
                                tuple(float(f) for f in fov), oblique)
    return geometry, record
