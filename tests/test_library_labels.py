"""select_labels: masks from existing label maps (e.g. FreeSurfer aseg)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import voxel as vx

from conftest import GEOMETRIES, make_geometry
from vpcli.errors import ProgramError
from vpcli.library.labels import select_labels
from vpcli.library.morphometry import volume
from vpcli.volumes import Scan, SourceRef


def label_map(geometry) -> Scan:
    generator = torch.Generator().manual_seed(7)
    labels = torch.randint(0, 5, (1, *geometry.baseshape), generator=generator, dtype=torch.int32)
    labels[0, :, :, 0] = 17  # one label occupying a whole slice
    return Scan(volume=vx.Volume(labels, geometry), name='img1', path=Path('sub-01_aseg.nii.gz'),
                modality='labelmap', sources=(SourceRef('img1', 'sub-01_aseg.nii.gz'),))


def test_selects_one_or_several_labels(geometry):
    scan = label_map(geometry)
    labels = scan.volume.tensor[0]
    one = select_labels(scan, 17)
    assert torch.equal(one.volume.tensor[0], labels == 17)
    assert one.volume.tensor.dtype == torch.bool and one.description == 'labels 17'
    assert one.sources == scan.sources
    several = select_labels(scan, (1, 3))
    assert torch.equal(several.volume.tensor[0], (labels == 1) | (labels == 3))
    assert torch.allclose(several.volume.geometry.tensor, geometry.tensor)
    slice_mm3 = abs(float(torch.linalg.det(geometry.tensor.double()[:3, :3]))) * \
        geometry.baseshape[0] * geometry.baseshape[1]
    assert volume(one) == pytest.approx(slice_mm3 / 1000)


def test_refuses_images_and_bad_ids():
    geometry = make_geometry(**GEOMETRIES['lia_aniso'])
    scan = label_map(geometry)
    image = Scan(volume=vx.Volume(torch.rand(1, *geometry.baseshape), geometry), name='img0',
                 path=Path('sub-01_T1w.nii.gz'))
    with pytest.raises(ProgramError, match='img0 \\(sub-01_T1w.nii.gz\\) is not a label map'):
        select_labels(image, 2)
    with pytest.raises(ProgramError, match='ids must be integers'):
        select_labels(scan, 'hippocampus')
    with pytest.raises(ProgramError, match='ids must be integers'):
        select_labels(scan, (2.5,))
    with pytest.raises(ProgramError, match='labelmap must be a scan'):
        select_labels(select_labels(scan, 1), 1)
