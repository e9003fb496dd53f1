"""Intensity statistics: exact against numpy on the same voxels; grid checks; SNR."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import voxel as vx
from scipy.spatial import cKDTree

from conftest import GEOMETRIES, make_geometry, sphere_phantom, world_coordinates
from vpcli.errors import BadInputError, ProgramError
from vpcli.library.intensity import (SNR_HEAD_MARGIN_MM, mean_intensity, median_intensity,
                                     otsu_threshold, snr)
from vpcli.volumes import Mask, Scan, SourceRef


def as_scan(volume: vx.Volume, name='img0', file='sub-01_T1w.nii.gz') -> Scan:
    return Scan(volume=volume, name=name, path=Path(file), modality='T1w',
                sources=(SourceRef(name, file),))


def as_mask(phantom: vx.Volume, source=('img0', 'sub-01_T1w.nii.gz'), description='lesion'):
    return Mask(phantom, (SourceRef(*source),), description)


def random_image(geometry, rng) -> vx.Volume:
    values = rng.normal(300.0, 40.0, size=tuple(geometry.baseshape)).astype(np.float32)
    return vx.Volume(torch.from_numpy(values).unsqueeze(0), geometry)


def test_mean_and_median_are_exact(geometry, rng):
    image = random_image(geometry, rng)
    phantom = sphere_phantom(geometry, geometry.center.tolist(), 7.0)
    scan, mask = as_scan(image), as_mask(phantom)
    voxels = image.tensor[0].numpy().astype(np.float64)[phantom.tensor[0].numpy()]
    assert voxels.size > 10
    assert mean_intensity(scan, mask) == pytest.approx(np.mean(voxels), rel=1e-13, abs=0)
    assert median_intensity(scan, mask) == np.median(voxels)


def test_median_of_an_even_count_averages_the_middle_pair(geometry):
    tensor = torch.zeros(1, *geometry.baseshape)
    selected = torch.zeros(1, *geometry.baseshape, dtype=torch.bool)
    for index, value in enumerate((1.0, 2.0, 10.0, 40.0)):
        tensor[0, index, 0, 0] = value
        selected[0, index, 0, 0] = True
    scan, mask = as_scan(vx.Volume(tensor, geometry)), as_mask(vx.Volume(selected, geometry))
    assert median_intensity(scan, mask) == 6.0
    assert mean_intensity(scan, mask) == 13.25


def test_mask_on_another_grid_names_both_files():
    scan_geometry = make_geometry(**GEOMETRIES['lps_aniso'])
    mask_geometry = make_geometry(**GEOMETRIES['ras_iso_1mm'])
    scan = as_scan(vx.Volume(torch.ones(1, *scan_geometry.baseshape), scan_geometry), 'img1',
                   'sub-01_ses-02_FLAIR.nii.gz')
    mask = as_mask(sphere_phantom(mask_geometry, (0, 0, 0), 5.0),
                   source=('img0', 'sub-01_ses-01_T1w.nii.gz'))
    for function in (mean_intensity, median_intensity, snr):
        with pytest.raises(BadInputError) as caught:
            function(scan, mask)
        message = str(caught.value)
        assert '\n' not in message
        assert 'sub-01_ses-02_FLAIR.nii.gz' in message and 'sub-01_ses-01_T1w.nii.gz' in message
        assert 'resample_mask' in message and function.__name__ in message


def test_argument_types_and_empty_masks_are_program_errors(geometry):
    scan = as_scan(vx.Volume(torch.ones(1, *geometry.baseshape), geometry))
    empty = as_mask(vx.Volume(torch.zeros(1, *geometry.baseshape, dtype=torch.bool), geometry))
    with pytest.raises(ProgramError, match='empty'):
        mean_intensity(scan, empty)
    with pytest.raises(ProgramError, match='mask must be a mask, got scan img0'):
        mean_intensity(scan, scan)
    with pytest.raises(ProgramError, match='scan must be a scan'):
        median_intensity(empty, empty)


def test_otsu_splits_two_populations(rng):
    values = np.concatenate([rng.normal(0, 3, 5000), rng.normal(100, 5, 2000)])
    assert 20 < otsu_threshold(values) < 80


@pytest.mark.parametrize('name', ['ras_iso_1mm', 'lps_aniso'])
def test_snr_follows_its_documented_definition(name, rng):
    geometry = make_geometry(**GEOMETRIES[name])
    centre = geometry.center.tolist()
    head = sphere_phantom(geometry, centre, 14.0).tensor[0].numpy()
    noise = rng.normal(0.0, 4.0, size=head.shape)
    image = np.where(head, 200.0, 0.0) + noise
    scan = as_scan(vx.Volume(torch.from_numpy(image.astype(np.float32)).unsqueeze(0), geometry))
    mask = as_mask(sphere_phantom(geometry, centre, 6.0))

    # independent reference: background = voxels farther than the margin from the head
    world = world_coordinates(geometry).numpy().reshape(-1, 3)
    distances, _ = cKDTree(world[head.ravel()]).query(world)
    background = (distances > SNR_HEAD_MARGIN_MM + 1e-6).reshape(head.shape)
    stored = image.astype(np.float32).astype(np.float64)
    expected = stored[mask.volume.tensor[0].numpy()].mean() / stored[background].std()
    assert snr(scan, mask) == pytest.approx(expected, rel=1e-9)
    assert snr(scan, mask) == pytest.approx(200.0 / 4.0, rel=0.1)


def test_snr_without_background_is_a_clear_error(geometry):
    scan = as_scan(vx.Volume(torch.full((1, *geometry.baseshape), 50.0), geometry))
    mask = as_mask(sphere_phantom(geometry, geometry.center.tolist(), 5.0))
    with pytest.raises(ProgramError, match='snr: .*sub-01_T1w.nii.gz'):
        snr(scan, mask)


def test_snr_docstring_states_the_constants_in_force():
    doc = snr.__doc__
    assert f'farther than {SNR_HEAD_MARGIN_MM:g} mm' in doc
    from vpcli.library.intensity import OTSU_BINS, SNR_MIN_BACKGROUND_VOXELS
    assert f'{OTSU_BINS}-bin' in doc and f'fewer than {SNR_MIN_BACKGROUND_VOXELS}' in doc
