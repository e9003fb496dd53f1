"""Image edits: cropping keeps world positions; remove/extract change only the right voxels."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pytest
import torch
import voxel as vx

from conftest import GEOMETRIES, make_geometry, sphere_phantom, world_coordinates
from vpcli.errors import BadInputError, ProgramError
from vpcli.library.edits import crop, extract, remove
from vpcli.library.masks import dilate
from vpcli.volumes import Mask, Scan, SourceRef


def make_scan(geometry, rng, offset=0.0) -> Scan:
    values = rng.uniform(10.0, 500.0, size=tuple(geometry.baseshape)).astype(np.float32) + offset
    return Scan(volume=vx.Volume(torch.from_numpy(values).unsqueeze(0), geometry), name='img0',
                path=Path('sub-01_ses-01_T1w.nii.gz'), modality='T1w', date=dt.date(2021, 3, 4),
                session='01', sha256='0' * 64, sources=(SourceRef('img0', 'sub-01_ses-01_T1w.nii.gz'),))


def make_mask(geometry, centre_shift=(0.0, 0.0, 0.0), radius=6.0) -> Mask:
    centre = (geometry.center.double() + torch.tensor(centre_shift, dtype=torch.float64)).tolist()
    return Mask(sphere_phantom(geometry, centre, radius),
                (SourceRef('img1', 'sub-01_ses-01_FLAIR.nii.gz'),), 'lesion')


@pytest.mark.parametrize('margin_mm', [0.0, 4.0])
def test_crop_keeps_world_positions_and_values(geometry, rng, margin_mm):
    scan = make_scan(geometry, rng)
    mask = make_mask(geometry, (3.0, -2.0, 1.0))
    cropped = crop(scan, mask, margin_mm)
    assert cropped.volume.baseshape != scan.volume.baseshape

    # every cropped voxel sits at the world position of an original voxel with the same value
    world = world_coordinates(cropped.volume.geometry).reshape(-1, 3)
    inverse = torch.linalg.inv(geometry.tensor.double())
    original_index = world @ inverse[:3, :3].T + inverse[:3, 3]
    assert torch.allclose(original_index, original_index.round(), atol=1e-3)
    i, j, k = original_index.round().long().T
    assert torch.equal(scan.volume.tensor[0][i, j, k], cropped.volume.tensor[0].reshape(-1))

    # the crop holds every voxel within margin_mm of the mask (and the whole mask)
    wanted = dilate(mask, margin_mm).volume.tensor[0] if margin_mm else mask.volume.tensor[0]
    kept = torch.zeros_like(wanted)
    kept[i, j, k] = True
    assert not (wanted & ~kept).any()

    # metadata of the scan is kept; sources gain the mask's
    assert cropped.name == 'img0_crop' and cropped.path is None and cropped.sha256 is None
    assert cropped.date == scan.date and cropped.modality == 'T1w'
    assert cropped.sources == (SourceRef('img0', 'sub-01_ses-01_T1w.nii.gz'),
                               SourceRef('img1', 'sub-01_ses-01_FLAIR.nii.gz'))
    assert cropped.volume.geometry.orientation.name == geometry.orientation.name


def test_crop_margin_is_rounded_up_per_axis():
    geometry = make_geometry(**GEOMETRIES['lps_aniso'])  # 0.7 x 0.9 x 4 mm
    tensor = torch.zeros(1, *geometry.baseshape, dtype=torch.bool)
    tensor[0, 30, 30, 6] = True
    mask = Mask(vx.Volume(tensor, geometry), (), 'dot')
    scan = Scan(volume=vx.Volume(torch.ones(1, *geometry.baseshape), geometry), name='img0')
    # 5 mm: ceil(5/0.7)=8, ceil(5/0.9)=6, ceil(5/4)=2 voxels each side
    assert tuple(crop(scan, mask, 5.0).volume.baseshape) == (17, 13, 5)
    assert tuple(crop(scan, mask, 0).volume.baseshape) == (1, 1, 1)
    # clipped at the grid edge
    assert tuple(crop(scan, mask, 100.0).volume.baseshape) == tuple(geometry.baseshape)


def test_crop_margin_uses_the_distance_between_voxel_centres_on_a_sheared_grid():
    """On a sheared grid the voxel size is the column norm of the matrix (voxel_spacing_mm),
    not voxel's QR-based ``geometry.spacing``; the crop margin counts in the former."""
    from vpcli.volumes import voxel_spacing_mm
    matrix = torch.tensor([[1.0, 2.0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
    geometry = vx.AcquisitionGeometry(torch.Size((21, 21, 21)), matrix)
    # neighbours along the second axis are sqrt(5) mm apart; QR says 1 mm
    assert voxel_spacing_mm(geometry).tolist() == pytest.approx([1.0, 5 ** 0.5, 1.0])
    assert geometry.spacing.tolist() == pytest.approx([1.0, 1.0, 1.0])
    tensor = torch.zeros(1, 21, 21, 21, dtype=torch.bool)
    tensor[0, 10, 10, 10] = True
    mask = Mask(vx.Volume(tensor, geometry), (), 'dot')
    scan = Scan(volume=vx.Volume(torch.ones(1, 21, 21, 21), geometry), name='img0')
    # 4 mm: ceil(4/1)=4, ceil(4/sqrt(5))=2, ceil(4/1)=4 voxels each side
    assert tuple(crop(scan, mask, 4.0).volume.baseshape) == (9, 5, 9)


def test_remove_sets_mask_voxels_to_the_image_minimum(geometry, rng):
    scan = make_scan(geometry, rng, offset=-1024.0)  # CT-like: minimum is air, not 0
    mask = make_mask(geometry)
    edited = remove(scan, mask)
    inside = mask.volume.tensor[0]
    before, after = scan.volume.tensor[0], edited.volume.tensor[0]
    assert torch.all(after[inside] == before.min())
    assert torch.equal(after[~inside], before[~inside])
    assert edited.volume.dtype == scan.volume.dtype
    assert torch.allclose(edited.volume.geometry.tensor, geometry.tensor)
    assert edited.name == 'img0_removed'


def test_extract_zeroes_everything_outside(geometry, rng):
    scan = make_scan(geometry, rng)
    mask = make_mask(geometry)
    edited = extract(scan, mask)
    inside = mask.volume.tensor[0]
    assert torch.equal(edited.volume.tensor[0][inside], scan.volume.tensor[0][inside])
    assert torch.all(edited.volume.tensor[0][~inside] == 0)
    assert edited.name == 'img0_extracted'


def test_edits_refuse_masks_on_other_grids_and_bad_arguments(rng):
    scan = make_scan(make_geometry(**GEOMETRIES['lia_aniso']), rng)
    mask = make_mask(make_geometry(**GEOMETRIES['ras_iso_1mm']))
    for function in (crop, remove, extract):
        with pytest.raises(BadInputError, match='sub-01_ses-01_FLAIR.*sub-01_ses-01_T1w'):
            function(scan, mask)
    good = make_mask(scan.volume.geometry)
    with pytest.raises(ProgramError, match='margin_mm must be zero or positive'):
        crop(scan, good, -2)
    empty = Mask(good.volume.new(torch.zeros_like(good.volume.tensor)), (), 'nothing')
    with pytest.raises(ProgramError, match='empty'):
        crop(scan, empty, 1.0)
    with pytest.raises(ProgramError, match='crop: scan must be a scan'):
        crop(good, good, 1.0)
