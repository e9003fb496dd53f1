"""Mask algebra: set operations, world-distance dilation and shells, resampling between grids."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import voxel as vx
from scipy.spatial import cKDTree

from conftest import GEOMETRIES, make_geometry, sphere_phantom, world_coordinates
from vpcli.errors import BadInputError, ProgramError
from vpcli.library.masks import (dilate, intersect, resample_mask, shell, subtract, union,
                                 within_distance)
from vpcli.library.morphometry import center_of_mass, volume
from vpcli.volumes import Mask, Scan, SourceRef


def as_mask(phantom: vx.Volume, name='img0', file='sub-01_T1w.nii.gz', description='lesion'):
    return Mask(phantom, (SourceRef(name, file),), description)


def distance_to_mask_mm(geometry, inside: np.ndarray) -> np.ndarray:
    """Brute force: world distance from every voxel centre to the nearest mask voxel centre."""
    world = world_coordinates(geometry).numpy().reshape(-1, 3)
    distances, _ = cKDTree(world[inside.ravel()]).query(world)
    return distances.reshape(inside.shape)


def sheared_geometry() -> vx.AcquisitionGeometry:
    """A non-orthogonal (gantry-tilt-like) grid: exercises the structuring-element path."""
    matrix = np.eye(4)
    matrix[:3, :3] = [[0.9, 0.0, 0.0], [0.0, 0.8, 0.9], [0.0, 0.0, 2.5]]
    matrix[:3, 3] = [-18.0, -20.0, -20.0]
    return vx.AcquisitionGeometry((40, 44, 16), torch.tensor(matrix))


@pytest.mark.parametrize('mm', [3.1, 5.3])
def test_dilate_and_shell_distances_are_world_mm(geometry, mm):
    phantom = sphere_phantom(geometry, (geometry.center + torch.tensor([0.4, -0.3, 0.2])).tolist(),
                             6.0)
    mask = as_mask(phantom)
    inside = phantom.tensor[0].numpy()
    distance = distance_to_mask_mm(geometry, inside)
    grown = dilate(mask, mm).volume.tensor[0].numpy()
    band = shell(mask, mm).volume.tensor[0].numpy()
    # voxels within float rounding of the boundary may go either way
    clear = np.abs(distance - mm) > 1e-4
    assert clear.mean() > 0.99
    assert np.array_equal(grown[clear], (distance <= mm)[clear])
    assert np.array_equal(band[clear], ((distance <= mm) & ~inside)[clear])
    assert np.array_equal(band, grown & ~inside)


def test_distances_on_a_sheared_grid():
    geometry = sheared_geometry()
    phantom = sphere_phantom(geometry, geometry.center.tolist(), 5.0)
    inside = phantom.tensor[0].numpy()
    distance = distance_to_mask_mm(geometry, inside)
    grown = within_distance(inside, geometry.tensor.double().numpy(), 4.2)
    clear = np.abs(distance - 4.2) > 1e-4
    assert np.array_equal(grown[clear], (distance <= 4.2)[clear])
    assert grown.sum() > 2 * inside.sum()


def test_thin_slices_do_not_grow_through_the_slice_axis_for_small_distances():
    geometry = make_geometry(**GEOMETRIES['lps_aniso'])  # 4 mm slices
    tensor = torch.zeros(1, *geometry.baseshape, dtype=torch.bool)
    tensor[0, 30, 30, 6] = True
    grown = dilate(as_mask(vx.Volume(tensor, geometry)), 3.0).volume.tensor[0]
    assert grown[:, :, 6].sum() > 1
    assert grown[:, :, 5].sum() == 0 and grown[:, :, 7].sum() == 0
    # 0.7 mm columns: 3 mm reaches 4 voxels either way along the first axis
    assert grown[26:35, 30, 6].all() and not grown[25, 30, 6] and not grown[35, 30, 6]


def test_dilate_keeps_grid_sources_and_zero_is_identity(geometry):
    mask = as_mask(sphere_phantom(geometry, geometry.center.tolist(), 5.0))
    same = dilate(mask, 0)
    assert torch.equal(same.volume.tensor, mask.volume.tensor)
    assert torch.allclose(same.volume.geometry.tensor, geometry.tensor)
    assert same.sources == mask.sources
    with pytest.raises(ProgramError, match='mm must be zero or positive'):
        dilate(mask, -1)
    with pytest.raises(ProgramError, match='mm must be a finite number'):
        shell(mask, 'wide')


def test_set_operations(geometry):
    centre = geometry.center
    left = sphere_phantom(geometry, (centre - torch.tensor([4.0, 0, 0])).tolist(), 7.0)
    right = sphere_phantom(geometry, (centre + torch.tensor([4.0, 0, 0])).tolist(), 7.0)
    a = as_mask(left, description='left blob')
    b = as_mask(right, 'img1', 'sub-01_FLAIR.nii.gz', description='right blob')
    a_voxels, b_voxels = left.tensor[0], right.tensor[0]
    assert torch.equal(union(a, b).volume.tensor[0], a_voxels | b_voxels)
    assert torch.equal(intersect(a, b).volume.tensor[0], a_voxels & b_voxels)
    assert torch.equal(subtract(a, b).volume.tensor[0], a_voxels & ~b_voxels)
    assert union(a, b).sources == (SourceRef('img0', 'sub-01_T1w.nii.gz'),
                                   SourceRef('img1', 'sub-01_FLAIR.nii.gz'))
    assert union(a, b).description == 'left blob or right blob'
    three = union(a, b, subtract(b, a))
    assert torch.equal(three.volume.tensor[0], a_voxels | b_voxels)
    assert volume(union(a, b)) == pytest.approx(
        volume(a) + volume(b) - volume(intersect(a, b)))


def test_set_operations_refuse_other_grids_and_non_masks():
    first = make_geometry(**GEOMETRIES['ras_iso_1mm'])
    second = make_geometry(**GEOMETRIES['lia_aniso'])
    a = as_mask(sphere_phantom(first, (0, 0, 0), 5.0), 'img0', 'a_T1w.nii.gz')
    b = as_mask(sphere_phantom(second, (0, 0, 0), 5.0), 'img1', 'b_T2w.nii.gz')
    for function in (union, intersect, subtract):
        with pytest.raises(BadInputError, match='a_T1w.nii.gz.*resample_mask|b_T2w.*a_T1w'):
            function(a, b)
    with pytest.raises(ProgramError, match='union: b must be a mask'):
        union(a, 2)


def test_resample_mask_moves_a_mask_between_grids():
    fine = make_geometry(**GEOMETRIES['ras_iso_1mm'])
    coarse = make_geometry(**GEOMETRIES['ras_oblique'])
    centre = (1.0, 2.0, -3.0)
    original = as_mask(sphere_phantom(fine, centre, 9.0))
    scan = Scan(volume=vx.Volume(torch.zeros(1, *coarse.baseshape), coarse), name='img1',
                sources=(SourceRef('img1', 'sub-01_FLAIR.nii.gz'),))
    moved = resample_mask(original, scan)
    assert tuple(moved.volume.baseshape) == tuple(coarse.baseshape)
    assert torch.allclose(moved.volume.geometry.tensor, coarse.tensor)
    assert moved.volume.tensor.dtype == torch.bool
    assert moved.sources == (SourceRef('img0', 'sub-01_T1w.nii.gz'),
                             SourceRef('img1', 'sub-01_FLAIR.nii.gz'))
    direct = sphere_phantom(coarse, centre, 9.0).tensor[0]
    got = moved.volume.tensor[0]
    dice = 2 * (got & direct).sum() / (got.sum() + direct.sum())
    assert dice > 0.9
    assert np.linalg.norm(np.subtract(center_of_mass(moved), centre)) < 1.0
    assert resample_mask(original, Scan(volume=vx.Volume(torch.zeros(1, *fine.baseshape), fine),
                                        name='img0')) is original
