"""Morphometry on phantoms drawn in world space and rasterised on every test geometry."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import voxel as vx

from conftest import box_phantom, sphere_phantom, world_coordinates
from vpcli.errors import ProgramError
from vpcli.library.morphometry import (bbox, center_of_mass, count_components, extent,
                                       largest_component, volume)
from vpcli.volumes import Mask, SourceRef

AXES = ('lr', 'ap', 'si')


def as_mask(phantom: vx.Volume, description: str = 'phantom') -> Mask:
    return Mask(phantom, (SourceRef('img0', 'sub-01_T1w.nii.gz'),), description)


def voxel_length_mm(geometry: vx.AcquisitionGeometry) -> np.ndarray:
    """A voxel's length along each world axis: sum_j |A[axis, j]|."""
    return geometry.tensor.double()[:3, :3].abs().sum(1).numpy()


def grid_centre(geometry) -> np.ndarray:
    return geometry.center.double().numpy()


def test_sphere_volume_within_2_percent(geometry):
    radius_mm = 12.0
    centre = grid_centre(geometry) + (0.3, -0.2, 0.45)  # off the voxel lattice
    mask = as_mask(sphere_phantom(geometry, centre.tolist(), radius_mm))
    expected_ml = 4 / 3 * math.pi * radius_mm ** 3 / 1000
    assert volume(mask) == pytest.approx(expected_ml, rel=0.02)


def test_volume_counts_voxels_times_voxel_volume(geometry):
    mask = as_mask(sphere_phantom(geometry, grid_centre(geometry).tolist(), 8.0))
    voxel_mm3 = abs(np.linalg.det(geometry.tensor.double()[:3, :3].numpy()))
    assert volume(mask) == pytest.approx(int(mask.volume.tensor.sum()) * voxel_mm3 / 1000,
                                         rel=1e-12)


def test_extents_along_anatomical_axes_in_every_orientation(geometry):
    # a box with a different size along each anatomical axis catches swapped axes
    half_sizes = np.array([7.0, 10.0, 16.0])
    centre = grid_centre(geometry)
    mask = as_mask(box_phantom(geometry, (centre - half_sizes).tolist(),
                               (centre + half_sizes).tolist()))
    lengths = voxel_length_mm(geometry)
    measured = bbox(mask)
    for index, axis in enumerate(AXES):
        true_mm = 2 * half_sizes[index]
        assert extent(mask, axis) == measured[index]
        assert abs(extent(mask, axis) - true_mm) <= lengths[index] + 1e-9, (axis, measured)


def test_extent_definition_matches_world_coordinates(geometry):
    centre = grid_centre(geometry)
    mask = as_mask(sphere_phantom(geometry, centre.tolist(), 9.0))
    points = world_coordinates(geometry)[mask.volume.tensor[0]].numpy()
    expected = points.max(0) - points.min(0) + voxel_length_mm(geometry)
    assert np.allclose(bbox(mask), expected, atol=1e-9)


def test_single_voxel_extent_is_its_own_size(geometry):
    tensor = torch.zeros(1, *geometry.baseshape, dtype=torch.bool)
    tensor[0, 3, 4, 5] = True
    mask = as_mask(vx.Volume(tensor, geometry))
    assert np.allclose(bbox(mask), voxel_length_mm(geometry), atol=1e-9)


def test_extent_is_the_same_for_the_same_object_on_every_grid():
    from conftest import GEOMETRIES, make_geometry
    extents = []
    for name in ('ras_iso_1mm', 'lps_aniso'):
        geometry = make_geometry(**GEOMETRIES[name])
        centre = grid_centre(geometry)
        half = np.array([6.0, 9.0, 14.0])
        extents.append(bbox(as_mask(box_phantom(geometry, (centre - half).tolist(),
                                                (centre + half).tolist()))))
    # LPS voxels are 0.7 x 0.9 x 4 mm, so the two agree within the coarser voxel
    assert np.allclose(extents[0], extents[1], atol=4.0)
    assert extents[0][2] > extents[0][1] > extents[0][0]
    assert extents[1][2] > extents[1][1] > extents[1][0]


def test_center_of_mass_within_half_a_voxel(geometry):
    centre = grid_centre(geometry) + (1.3, -2.1, 0.7)
    mask = as_mask(sphere_phantom(geometry, centre.tolist(), 10.0))
    found = np.array(center_of_mass(mask))
    assert np.linalg.norm(found - centre) <= 0.5 * float(geometry.spacing.min())
    points = world_coordinates(geometry)[mask.volume.tensor[0]].numpy()
    assert np.allclose(found, points.mean(0), atol=1e-9)


def test_center_of_mass_of_an_empty_mask_is_an_error(geometry):
    empty = as_mask(vx.Volume(torch.zeros(1, *geometry.baseshape, dtype=torch.bool), geometry),
                    'nothing')
    with pytest.raises(ProgramError, match='nothing.*empty'):
        center_of_mass(empty)
    assert volume(empty) == 0.0
    assert bbox(empty) == (0.0, 0.0, 0.0)
    assert count_components(empty) == 0


def test_components_use_26_connectivity(geometry):
    tensor = torch.zeros(1, *geometry.baseshape, dtype=torch.bool)
    tensor[0, 2, 2, 2] = True
    tensor[0, 3, 3, 3] = True      # touches the first only at a corner: same piece
    tensor[0, 10:14, 8:12, 5:8] = True  # a separate, larger block
    mask = as_mask(vx.Volume(tensor, geometry))
    assert count_components(mask) == 2
    largest = largest_component(mask)
    assert torch.equal(largest.volume.tensor[0].cpu(),
                       torch.zeros_like(tensor[0]).index_put_(
                           (torch.arange(10, 14).view(-1, 1, 1), torch.arange(8, 12).view(1, -1, 1),
                            torch.arange(5, 8).view(1, 1, -1)), torch.tensor(True)))
    assert largest.sources == mask.sources
    assert torch.allclose(largest.volume.geometry.tensor, geometry.tensor)


def test_two_spheres_are_two_components(geometry):
    centre = grid_centre(geometry)
    offset = np.array([12.0, 0.0, 0.0])
    big = sphere_phantom(geometry, (centre - offset).tolist(), 8.0)
    small = sphere_phantom(geometry, (centre + offset).tolist(), 5.0)
    mask = as_mask(big.new(big.tensor | small.tensor))
    assert count_components(mask) == 2
    assert volume(largest_component(mask)) == pytest.approx(volume(as_mask(big)))


def test_bad_arguments_are_one_line_program_errors(geometry):
    mask = as_mask(sphere_phantom(geometry, grid_centre(geometry).tolist(), 5.0))
    with pytest.raises(ProgramError, match='axis must be "lr"') as caught:
        extent(mask, 'xy')
    assert '\n' not in str(caught.value)
    with pytest.raises(ProgramError, match='volume: mask must be a mask'):
        volume(3.0)
    assert extent(mask, 'SI') == extent(mask, 'si')
