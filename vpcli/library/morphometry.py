"""Morphometry: size, extent and position of masks, in mL, mm and scanner RAS mm.

Directions are anatomical and taken from the voxel-to-world matrix (scanner RAS: x
increases towards the subject's right, y towards anterior, z towards superior), so
results do not depend on the file's voxel order (RAS, LPS, LIA, ...) or on an
oblique acquisition.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vpcli.errors import ProgramError
from vpcli.library.masks import mask_array, new_mask, require_mask, voxel_to_world
from vpcli.library.registry import agent_function
from vpcli.volumes import Mask

if TYPE_CHECKING:
    import numpy as np

#: anatomical axis name -> row of the voxel-to-world matrix (scanner RAS: x, y, z)
ANATOMICAL_AXES = {'lr': 0, 'ap': 1, 'si': 2}

#: connectivity used for components: 3 = face, edge and corner neighbours (26-connectivity)
COMPONENT_CONNECTIVITY = 3


def _axis_index(function: str, axis) -> int:
    key = axis.lower() if isinstance(axis, str) else axis
    if key not in ANATOMICAL_AXES:
        raise ProgramError(f'{function}: axis must be "lr" (left-right), "ap" (anterior-posterior) '
                           f'or "si" (superior-inferior), got {axis!r}')
    return ANATOMICAL_AXES[key]


def _mask_world_points(mask: Mask) -> tuple['np.ndarray', 'np.ndarray']:
    """World coordinates (N, 3) of the mask's voxel centres, and the 4x4 matrix."""
    import numpy as np

    matrix = voxel_to_world(mask.volume)
    voxels = np.argwhere(mask_array(mask)).astype(np.float64)
    return voxels @ matrix[:3, :3].T + matrix[:3, 3], matrix


def _extents_mm(mask: Mask) -> tuple[float, float, float]:
    import numpy as np

    points, matrix = _mask_world_points(mask)
    if len(points) == 0:
        return 0.0, 0.0, 0.0
    # a voxel's own length along world axis k: the projection of its edges onto k
    voxel_length = np.abs(matrix[:3, :3]).sum(axis=1)
    spans = points.max(axis=0) - points.min(axis=0) + voxel_length
    return tuple(float(s) for s in spans)


@agent_function('morphometry', returns='float, mL')
def volume(mask: Mask) -> float:
    """Volume of a mask in millilitres.

    Args:
        mask: A binary mask.

    Returns:
        Number of mask voxels times the voxel volume (|det| of the voxel-to-world
        matrix, mm^3), in mL (1 mL = 1000 mm^3). 0.0 for an empty mask.
    """
    import torch

    require_mask('volume', mask)
    matrix = mask.volume.geometry.tensor.double()
    voxel_mm3 = float(torch.linalg.det(matrix[:3, :3]).abs())
    return float((mask.volume.tensor != 0).sum()) * voxel_mm3 / 1000.0


@agent_function('morphometry', returns='float, mm')
def extent(mask: Mask, axis: str) -> float:
    """Length of a mask along one anatomical axis, in mm.

    Defined as the spread of the mask's voxel centres along the scanner RAS axis
    (max minus min of their world coordinate) plus the length of one voxel along
    that axis (sum over voxel axes j of |A[axis, j]|, A the voxel-to-world matrix),
    so that a single voxel has the extent of its own size. The result does not
    depend on the file's voxel order or on an oblique acquisition.

    Args:
        mask: A binary mask.
        axis: ``"lr"`` (left-right, scanner x), ``"ap"`` (anterior-posterior,
            scanner y) or ``"si"`` (superior-inferior, scanner z).

    Returns:
        Extent in mm; 0.0 for an empty mask.
    """
    require_mask('extent', mask)
    return _extents_mm(mask)[_axis_index('extent', axis)]


@agent_function('morphometry', returns='tuple (lr, ap, si), mm')
def bbox(mask: Mask) -> tuple:
    """Bounding-box dimensions of a mask along the three anatomical axes, in mm.

    Each dimension is :func:`extent` along that axis (left-right, anterior-posterior,
    superior-inferior), i.e. the box is aligned with scanner RAS axes, not with the
    voxel grid.

    Args:
        mask: A binary mask.

    Returns:
        ``(lr, ap, si)`` extents in mm; ``(0.0, 0.0, 0.0)`` for an empty mask.
    """
    require_mask('bbox', mask)
    return _extents_mm(mask)


@agent_function('morphometry', returns='tuple (x, y, z), scanner RAS mm')
def center_of_mass(mask: Mask) -> tuple:
    """Centre of mass of a mask in scanner RAS coordinates, in mm.

    The mean of the world positions of the mask's voxel centres (every voxel weighs
    the same). x increases towards the subject's right, y towards anterior, z
    towards superior.

    Args:
        mask: A binary, non-empty mask.

    Returns:
        ``(x, y, z)`` in scanner RAS mm.

    Raises:
        ProgramError: when the mask is empty.
    """
    require_mask('center_of_mass', mask)
    points, _ = _mask_world_points(mask)
    if len(points) == 0:
        raise ProgramError(f'center_of_mass: {mask.label} is empty')
    return tuple(float(c) for c in points.mean(axis=0))


def _components(mask: Mask, largest: bool):
    import voxel as vx

    binary = mask.volume.new(mask.volume.tensor != 0, keep_labels=False)
    return vx.morphology.connected_components(binary, connectivity=COMPONENT_CONNECTIVITY,
                                              largest=largest)


@agent_function('morphometry', returns='int, count')
def count_components(mask: Mask) -> int:
    """Number of separate pieces (connected components) of a mask.

    Voxels are connected through faces, edges and corners (26-connectivity), so two
    voxels touching only at a corner belong to the same piece.

    Args:
        mask: A binary mask.

    Returns:
        Number of connected components; 0 for an empty mask.
    """
    require_mask('count_components', mask)
    labelled = _components(mask, largest=False)
    return int(labelled.tensor.max()) if labelled.tensor.numel() else 0


@agent_function('morphometry', returns='mask')
def largest_component(mask: Mask) -> Mask:
    """The largest connected piece of a mask (26-connectivity, by voxel count).

    Args:
        mask: A binary mask.

    Returns:
        A mask on the same grid holding only the largest component (empty when the
        input is empty; the first found among equally large pieces).
    """
    require_mask('largest_component', mask)
    largest = _components(mask, largest=True)
    return new_mask(mask, (largest.tensor[0] != 0).cpu().numpy(), mask.sources,
                    f'largest component of {mask.description}')
