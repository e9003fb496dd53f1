"""Characterization on constructed images whose lesion/surround ratios are known."""

from __future__ import annotations

import inspect
from pathlib import Path

import numpy as np
import pytest
import torch
import voxel as vx

from conftest import GEOMETRIES, make_geometry, sphere_phantom, world_coordinates
from vpcli.errors import BadInputError, ProgramError
from vpcli.library import characterization
from vpcli.library.characterization import (THRESHOLDS, diffusion_class, enhancement_class,
                                            enhancement_ratio, location, overlap_fraction,
                                            signal_class, signal_ratio)
from vpcli.library.masks import shell
from vpcli.volumes import Mask, Scan, SourceRef


def lesion_mask(geometry, radius=5.0, shift=(0.0, 0.0, 0.0), description='lesion') -> Mask:
    centre = (geometry.center.double() + torch.tensor(shift, dtype=torch.float64)).tolist()
    return Mask(sphere_phantom(geometry, centre, radius), (SourceRef('img0', 'sub-01_FLAIR.nii.gz'),),
                description)


def image_with_lesion(geometry, mask: Mask, surround: float, lesion: float, name='img0',
                      file='sub-01_FLAIR.nii.gz') -> Scan:
    tensor = torch.full((1, *geometry.baseshape), surround, dtype=torch.float32)
    tensor[mask.volume.tensor] = lesion
    return Scan(volume=vx.Volume(tensor, geometry), name=name, path=Path(file),
                sources=(SourceRef(name, file),))


@pytest.mark.parametrize('known_ratio, expected', [(1.4, 'hyperintense'), (0.6, 'hypointense'),
                                                   (1.05, 'isointense')])
def test_signal_ratio_and_class_on_known_contrast(geometry, known_ratio, expected):
    mask = lesion_mask(geometry)
    scan = image_with_lesion(geometry, mask, 100.0, 100.0 * known_ratio)
    measured = signal_ratio(scan, mask)
    assert measured == pytest.approx(known_ratio, rel=1e-6)
    assert signal_class(measured) == expected


def test_signal_ratio_uses_the_documented_shell(geometry, rng):
    mask = lesion_mask(geometry)
    values = rng.uniform(50.0, 150.0, size=tuple(geometry.baseshape)).astype(np.float32)
    scan = Scan(volume=vx.Volume(torch.from_numpy(values).unsqueeze(0), geometry), name='img0')
    around = shell(mask, 3.0).volume.tensor[0].numpy()
    inside = mask.volume.tensor[0].numpy()
    stored = values.astype(np.float64)
    expected = stored[inside].mean() / stored[around].mean()
    assert signal_ratio(scan, mask, margin_mm=3.0) == pytest.approx(expected, rel=1e-12)
    # the shell really is the voxels within 3 mm (world) of the lesion, outside it
    world = world_coordinates(geometry).numpy()
    from scipy.spatial import cKDTree
    distance, _ = cKDTree(world[inside]).query(world.reshape(-1, 3))
    distance = distance.reshape(inside.shape)
    clear = np.abs(distance - 3.0) > 1e-4
    assert np.array_equal(around[clear], ((distance <= 3.0) & ~inside)[clear])


def test_class_thresholds_are_strict():
    assert signal_class(THRESHOLDS.hyperintense_above) == 'isointense'
    assert signal_class(THRESHOLDS.hyperintense_above + 1e-6) == 'hyperintense'
    assert signal_class(THRESHOLDS.hypointense_below) == 'isointense'
    assert signal_class(THRESHOLDS.hypointense_below - 1e-6) == 'hypointense'
    assert enhancement_class(THRESHOLDS.enhancing_above) == 'non-enhancing'
    assert enhancement_class(THRESHOLDS.enhancing_above + 1e-6) == 'enhancing'
    with pytest.raises(ProgramError, match='ratio must be a finite number'):
        signal_class('bright')


def test_enhancement_ratio_on_pre_and_post_contrast_pair():
    geometry = make_geometry(**GEOMETRIES['lps_aniso'])
    mask = lesion_mask(geometry, radius=6.0)
    pre = image_with_lesion(geometry, mask, 100.0, 100.0, 'img0', 'sub-01_T1w.nii.gz')
    post = image_with_lesion(geometry, mask, 110.0, 160.0, 'img1', 'sub-01_ce-gad_T1w.nii.gz')
    value = enhancement_ratio(post, pre, mask)
    assert value == pytest.approx(160.0 / 110.0, rel=1e-6)
    assert enhancement_class(value) == 'enhancing'
    # a globally brighter post-contrast scan without local uptake does not enhance
    brighter = image_with_lesion(geometry, mask, 200.0, 220.0, 'img1', 'sub-01_ce-gad_T1w.nii.gz')
    dimmer = image_with_lesion(geometry, mask, 100.0, 110.0, 'img0', 'sub-01_T1w.nii.gz')
    assert enhancement_ratio(brighter, dimmer, mask) == pytest.approx(1.0, rel=1e-6)
    assert enhancement_class(enhancement_ratio(brighter, dimmer, mask)) == 'non-enhancing'


def test_diffusion_class_needs_high_dwi_and_low_adc():
    geometry = make_geometry(**GEOMETRIES['lia_aniso'])
    mask = lesion_mask(geometry, radius=6.0)
    dwi = image_with_lesion(geometry, mask, 100.0, 150.0, 'img0', 'sub-01_dwi.nii.gz')
    low_adc = image_with_lesion(geometry, mask, 800.0, 480.0, 'img1', 'sub-01_adc.nii.gz')
    high_adc = image_with_lesion(geometry, mask, 800.0, 1000.0, 'img1', 'sub-01_adc.nii.gz')
    dwi_ratio = signal_ratio(dwi, mask)
    assert dwi_ratio == pytest.approx(1.5, rel=1e-6)
    assert signal_ratio(low_adc, mask) == pytest.approx(0.6, rel=1e-6)
    assert diffusion_class(dwi_ratio, signal_ratio(low_adc, mask)) == 'restricted diffusion'
    # bright on DWI but bright on ADC too: T2 shine-through, not restriction
    assert diffusion_class(dwi_ratio, signal_ratio(high_adc, mask)) == 'no restricted diffusion'
    assert diffusion_class(1.0, 0.5) == 'no restricted diffusion'


def test_overlap_fraction_and_location(geometry):
    centre_x = float(geometry.center[0])
    world_x = world_coordinates(geometry)[..., 0]
    left_voxels = (world_x < centre_x).unsqueeze(0)
    sources = (SourceRef('img0', 'sub-01_T1w.nii.gz'),)
    left = Mask(vx.Volume(left_voxels, geometry), sources, 'left hemisphere')
    right = Mask(vx.Volume(~left_voxels, geometry), sources, 'right hemisphere')
    lesion = lesion_mask(geometry, radius=5.0, shift=(-2.5, 0.0, 0.0))  # mostly left (RAS: -x)
    inside = lesion.volume.tensor[0]
    expected_left = float((inside & left_voxels[0]).sum()) / float(inside.sum())
    assert overlap_fraction(lesion, left) == pytest.approx(expected_left, abs=1e-12)
    assert overlap_fraction(lesion, left) + overlap_fraction(lesion, right) == pytest.approx(1.0)
    assert expected_left > 0.6
    assert location(lesion, right, left) == 'left hemisphere'
    nowhere = Mask(vx.Volume(torch.zeros_like(left_voxels), geometry), sources, 'cerebellum')
    assert location(lesion, nowhere) == characterization.OUTSIDE_ALL_REGIONS
    with pytest.raises(ProgramError, match='at least one region'):
        location(lesion)


def test_regions_on_another_grid_are_refused():
    lesion = lesion_mask(make_geometry(**GEOMETRIES['ras_iso_1mm']))
    other = make_geometry(**GEOMETRIES['ras_oblique'])
    lobe = Mask(sphere_phantom(other, (0, 0, 0), 20.0), (SourceRef('img1', 'atlas_dseg.nii.gz'),),
                'frontal lobe')
    with pytest.raises(BadInputError, match='frontal lobe.*atlas_dseg.nii.gz.*resample_mask'):
        location(lesion, lobe)


def test_signal_ratio_errors(geometry):
    mask = lesion_mask(geometry)
    scan = image_with_lesion(geometry, mask, 0.0, 10.0)
    with pytest.raises(ProgramError, match='not positive'):
        signal_ratio(scan, mask)
    with pytest.raises(ProgramError, match='margin_mm must be positive'):
        signal_ratio(scan, mask, 0)


def test_docstrings_state_the_thresholds_in_force():
    # the docs quote the numbers; this keeps them true if THRESHOLDS changes
    assert f'> {THRESHOLDS.hyperintense_above:g}' in inspect.getdoc(signal_class)
    assert f'< {THRESHOLDS.hypointense_below:g}' in inspect.getdoc(signal_class)
    assert f'> {THRESHOLDS.enhancing_above:g}' in inspect.getdoc(enhancement_class)
    assert f'> {THRESHOLDS.restricted_dwi_above:g}' in inspect.getdoc(diffusion_class)
    assert f'< {THRESHOLDS.restricted_adc_below:g}' in inspect.getdoc(diffusion_class)
    assert inspect.signature(signal_ratio).parameters['margin_mm'].default == \
        THRESHOLDS.surrounding_margin_mm
