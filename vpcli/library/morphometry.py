"""Morphometry: size, extent and position of masks, in mL, mm and scanner RAS mm."""

from __future__ import annotations

from vpcli.library.registry import agent_function
from vpcli.volumes import Mask


@agent_function('morphometry', returns='float, mL')
def volume(mask: Mask) -> float:
    """Volume of a mask in millilitres.

    Args:
        mask: A binary mask.

    Returns:
        Number of mask voxels times the voxel volume (|det| of the voxel-to-world
        matrix, mm^3), in mL (1 mL = 1000 mm^3).
    """
    import torch

    matrix = mask.volume.geometry.tensor.double()
    voxel_mm3 = float(torch.linalg.det(matrix[:3, :3]).abs())
    return float(mask.volume.tensor.bool().sum()) * voxel_mm3 / 1000.0
