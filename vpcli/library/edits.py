"""Image edits: crop a scan around a mask, remove or keep only the voxels of a mask.

Every edit returns a new image (a :class:`~vpcli.volumes.Scan` derived from the input,
same metadata) whose voxels keep their world positions: cropping shifts the
voxel-to-world matrix by the voxels removed, so a voxel's scanner RAS coordinate is
unchanged and the result overlays the original exactly.
"""

from __future__ import annotations

import dataclasses

from vpcli.errors import ProgramError
from vpcli.library.masks import (mask_array, require_mask, require_number, require_same_grid,
                                 require_scan)
from vpcli.library.registry import agent_function
from vpcli.volumes import Mask, Scan, union_sources, voxel_spacing_mm


def _checked(function: str, scan, mask) -> tuple[Scan, Mask]:
    require_scan(function, scan)
    require_mask(function, mask)
    require_same_grid(function, scan, mask)
    return scan, mask


def _derived(scan: Scan, mask: Mask, volume, suffix: str) -> Scan:
    return dataclasses.replace(scan.derive(volume, suffix),
                               sources=union_sources(scan.sources, mask.sources))


@agent_function('image edits', returns='image')
def crop(scan: Scan, mask: Mask, margin_mm: float = 0.0) -> Scan:
    """Crop a scan to the box around a mask plus a margin.

    The box is the range of voxel indices holding mask voxels, widened on every side
    by at least ``margin_mm`` (rounded up to whole voxels along each voxel axis) and
    clipped to the grid. The cropped image keeps world geometry: its voxel-to-world
    matrix is shifted so every kept voxel has the same scanner RAS position as before.

    Args:
        scan: The image to crop.
        mask: A non-empty binary mask on the scan's voxel grid.
        margin_mm: Margin around the mask in mm (>= 0).

    Returns:
        The cropped image (same voxel values, spacing and orientation).

    Raises:
        BadInputError: when the mask lies on another grid (use ``resample_mask``).
    """
    import numpy as np

    _checked('crop', scan, mask)
    margin = require_number('crop', margin_mm, 'margin_mm')
    if margin < 0:
        raise ProgramError(f'crop: margin_mm must be zero or positive, got {margin:g}')
    inside = mask_array(mask)
    if not inside.any():
        raise ProgramError(f'crop: {mask.label} is empty, so there is nothing to crop around')
    spacing = voxel_spacing_mm(scan.volume.geometry)
    # the 1e-6 keeps e.g. 4 mm at 2 mm spacing at exactly 2 voxels despite rounding
    margin_voxels = np.ceil(margin / spacing - 1e-6).astype(int)
    nonzero = np.nonzero(inside)
    low = np.maximum([int(n.min()) for n in nonzero] - margin_voxels, 0)
    high = np.minimum([int(n.max()) for n in nonzero] + margin_voxels, np.array(inside.shape) - 1)
    slicing = (slice(None), *(slice(int(a), int(b) + 1) for a, b in zip(low, high)))
    return _derived(scan, mask, scan.volume.crop(slicing), 'crop')


@agent_function('image edits', returns='image')
def remove(scan: Scan, mask: Mask) -> Scan:
    """Remove the tissue under a mask: set its voxels to the image's minimum value.

    The minimum (over the whole image) is the background value: 0 for most MRI,
    about -1024 HU (air) for CT. The grid is unchanged.

    Args:
        scan: The image to edit.
        mask: A binary mask on the scan's voxel grid.

    Returns:
        The edited image; voxels outside the mask are unchanged.

    Raises:
        BadInputError: when the mask lies on another grid (use ``resample_mask``).
    """
    import torch

    _checked('remove', scan, mask)
    tensor = scan.volume.tensor
    inside = (mask.volume.tensor != 0).to(tensor.device)
    edited = torch.where(inside, tensor.min(), tensor)
    return _derived(scan, mask, scan.volume.new(edited), 'removed')


@agent_function('image edits', returns='image')
def extract(scan: Scan, mask: Mask) -> Scan:
    """Keep only the tissue under a mask: set every voxel outside it to 0.

    The grid is unchanged (combine with ``crop`` to also shrink the field of view).

    Args:
        scan: The image to edit.
        mask: A binary mask on the scan's voxel grid.

    Returns:
        The edited image: the scan's values inside the mask, 0 elsewhere.

    Raises:
        BadInputError: when the mask lies on another grid (use ``resample_mask``).
    """
    import torch

    _checked('extract', scan, mask)
    tensor = scan.volume.tensor
    inside = (mask.volume.tensor != 0).to(tensor.device)
    edited = torch.where(inside, tensor, torch.zeros((), dtype=tensor.dtype, device=tensor.device))
    return _derived(scan, mask, scan.volume.new(edited), 'extracted')
