"""Shared fixtures: small phantoms on nontrivial geometry.

Geometries cover the cases that break naive code: anisotropic spacing
(0.7 x 0.9 x 4 mm), rotated (oblique) affines, translated origins, and voxel orders
RAS, LPS and LIA. A phantom is drawn in world space (scanner RAS mm), so the same
physical object can be rasterised on every geometry and measured the same way.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import voxel as vx

#: axis-code -> unit world direction (RAS)
_DIRECTIONS = {'R': (1, 0, 0), 'L': (-1, 0, 0), 'A': (0, 1, 0), 'P': (0, -1, 0),
               'S': (0, 0, 1), 'I': (0, 0, -1)}


def rotation_matrix(degrees_xyz: tuple[float, float, float]) -> np.ndarray:
    """3x3 rotation from successive rotations about world x, y, z (degrees)."""
    ax, ay, az = (math.radians(d) for d in degrees_xyz)
    rx = np.array([[1, 0, 0], [0, math.cos(ax), -math.sin(ax)], [0, math.sin(ax), math.cos(ax)]])
    ry = np.array([[math.cos(ay), 0, math.sin(ay)], [0, 1, 0], [-math.sin(ay), 0, math.cos(ay)]])
    rz = np.array([[math.cos(az), -math.sin(az), 0], [math.sin(az), math.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def make_geometry(shape: tuple[int, int, int], spacing_mm: tuple[float, float, float],
                  orientation: str = 'RAS', rotation_deg: tuple[float, float, float] = (0, 0, 0),
                  center_mm: tuple[float, float, float] = (0, 0, 0)) -> vx.AcquisitionGeometry:
    """A voxel->world geometry whose grid centre sits at ``center_mm`` (scanner RAS).

    Args:
        shape: Voxel counts along the three voxel axes.
        spacing_mm: Voxel size along each voxel axis, in mm.
        orientation: Voxel order, e.g. ``RAS``, ``LPS``, ``LIA`` (direction each voxel
            axis increases towards).
        rotation_deg: Extra rotation (degrees about world x, y, z) making it oblique.
        center_mm: World position of the grid centre, in mm.
    """
    columns = np.array([_DIRECTIONS[c] for c in orientation], dtype=float).T  # 3x3
    linear = rotation_matrix(rotation_deg) @ columns @ np.diag(spacing_mm)
    centre_voxel = (np.array(shape) - 1) / 2
    matrix = np.eye(4)
    matrix[:3, :3] = linear
    matrix[:3, 3] = np.array(center_mm) - linear @ centre_voxel
    return vx.AcquisitionGeometry(shape, torch.tensor(matrix, dtype=torch.float64))


def world_coordinates(geometry: vx.AcquisitionGeometry) -> torch.Tensor:
    """World (scanner RAS mm) coordinates of every voxel centre, shape (W, H, D, 3)."""
    shape = tuple(geometry.baseshape)
    grids = torch.meshgrid(*[torch.arange(n, dtype=torch.float64) for n in shape], indexing='ij')
    voxels = torch.stack(grids, dim=-1).reshape(-1, 3)
    matrix = geometry.tensor.to(torch.float64)
    world = voxels @ matrix[:3, :3].T + matrix[:3, 3]
    return world.reshape(*shape, 3)


def cube_scan(path: Path, size: int, low: int, high: int, spacing_mm: float = 2.0) -> Path:
    """A NIfTI scan of ``size``^3 voxels (RAS, ``spacing_mm``), 1 inside the cube
    ``[low, high)`` on every axis and 0 elsewhere."""
    from vpcli.volumes import save_volume
    geometry = vx.geometry_from_spacing(torch.Size((size, size, size)), spacing_mm, 'RAS')
    image = torch.zeros((1, size, size, size))
    image[0, low:high, low:high, low:high] = 1.0
    save_volume(vx.Volume(image, geometry), path)
    return path


def sphere_phantom(geometry: vx.AcquisitionGeometry, center_mm, radius_mm: float,
                   supersample: int = 3) -> vx.Volume:
    """Partial-volume-free binary sphere: a voxel is inside when most of its sub-samples are.

    Sub-sampling each voxel ``supersample``^3 times makes the rasterised volume
    converge to 4/3 pi r^3 even for thick slices.
    """
    matrix = geometry.tensor.to(torch.float64)
    shape = tuple(geometry.baseshape)
    offsets = (torch.arange(supersample, dtype=torch.float64) + 0.5) / supersample - 0.5
    sub = torch.stack(torch.meshgrid(offsets, offsets, offsets, indexing='ij'), -1).reshape(-1, 3)
    grids = torch.meshgrid(*[torch.arange(n, dtype=torch.float64) for n in shape], indexing='ij')
    voxels = torch.stack(grids, dim=-1).reshape(-1, 1, 3) + sub.reshape(1, -1, 3)
    world = voxels @ matrix[:3, :3].T + matrix[:3, 3]
    inside = ((world - torch.tensor(center_mm, dtype=torch.float64)) ** 2).sum(-1) <= radius_mm ** 2
    fraction = inside.double().mean(-1).reshape(shape)
    return vx.Volume((fraction >= 0.5).unsqueeze(0), geometry)


def box_phantom(geometry: vx.AcquisitionGeometry, low_mm, high_mm) -> vx.Volume:
    """Binary box: voxels whose centre lies within [low_mm, high_mm] on every world axis."""
    world = world_coordinates(geometry)
    low = torch.tensor(low_mm, dtype=torch.float64)
    high = torch.tensor(high_mm, dtype=torch.float64)
    inside = ((world >= low) & (world <= high)).all(-1)
    return vx.Volume(inside.unsqueeze(0), geometry)


#: named geometries used across the test suite
GEOMETRIES = {
    'ras_iso_1mm': dict(shape=(48, 52, 44), spacing_mm=(1.0, 1.0, 1.0), orientation='RAS'),
    'lps_aniso': dict(shape=(64, 56, 12), spacing_mm=(0.7, 0.9, 4.0), orientation='LPS',
                      center_mm=(3.0, -5.0, 7.0)),
    'lia_aniso': dict(shape=(60, 14, 50), spacing_mm=(0.8, 3.5, 0.9), orientation='LIA',
                      center_mm=(-2.0, 4.0, 1.0)),
    'ras_oblique': dict(shape=(64, 56, 14), spacing_mm=(0.7, 0.9, 4.0), orientation='RAS',
                        rotation_deg=(12.0, -8.0, 20.0), center_mm=(1.0, 2.0, -3.0)),
}


@pytest.fixture(params=sorted(GEOMETRIES))
def geometry(request) -> vx.AcquisitionGeometry:
    """Every named test geometry in turn."""
    return make_geometry(**GEOMETRIES[request.param])


@pytest.fixture
def rng() -> np.random.Generator:
    """Seeded random generator."""
    return np.random.default_rng(1234)


@pytest.fixture(scope='session')
def example_dataset(tmp_path_factory) -> dict[str, Path]:
    """The bundled real example (MNI152 T1w + tissue label map), written once per session."""
    from vpcli.examples import write_example
    return write_example(tmp_path_factory.mktemp('example'))


@pytest.fixture(scope='session')
def tiny_weights(tmp_path_factory) -> Path:
    """A tiny trained weights folder (see ``tiny_weights.py``), built once per session."""
    from tiny_weights import make_tiny_weights
    return make_tiny_weights(tmp_path_factory.mktemp('weights'))
