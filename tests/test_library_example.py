"""The library on the bundled real scan (MNI152 T1w + tissue label map), read from disk."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from vpcli.errors import ProgramError
from vpcli.library.characterization import signal_class, signal_ratio
from vpcli.library.edits import crop
from vpcli.library.intensity import mean_intensity, median_intensity, snr
from vpcli.library.labels import select_labels
from vpcli.library.morphometry import bbox, center_of_mass, volume
from vpcli.volumes import load_scans


@pytest.fixture(scope='module')
def example_scans(example_dataset):
    return load_scans([example_dataset['T1w'], example_dataset['dseg']])


@pytest.mark.slow
def test_measures_match_the_files_on_disk(example_scans, example_dataset):
    t1w, tissue = example_scans
    white = select_labels(tissue, 2)
    labels = np.asarray(nib.load(example_dataset['dseg']).dataobj)
    image = nib.load(example_dataset['T1w']).get_fdata(dtype=np.float64)
    voxel_mm3 = abs(np.linalg.det(nib.load(example_dataset['dseg']).affine[:3, :3]))
    assert volume(white) == pytest.approx((labels == 2).sum() * voxel_mm3 / 1000, rel=1e-12)
    assert mean_intensity(t1w, white) == pytest.approx(image[labels == 2].mean(), rel=1e-6)
    assert median_intensity(t1w, white) == pytest.approx(np.median(image[labels == 2]), rel=1e-6)
    # the template is left-right symmetric about x = 0
    assert abs(center_of_mass(white)[0]) < 1.0
    lr, ap, si = bbox(white)
    assert 100 < lr < ap and 100 < si < ap


@pytest.mark.slow
def test_white_matter_is_hyperintense_to_its_rim_on_t1w(example_scans):
    t1w, tissue = example_scans
    white = select_labels(tissue, 2)
    # a 2 mm shell around white matter is mostly grey matter, darker on T1w
    ratio = signal_ratio(t1w, white, 2.0)
    assert signal_class(ratio) == 'hyperintense', ratio


@pytest.mark.slow
def test_crop_and_snr_on_the_real_scan(example_scans):
    t1w, tissue = example_scans
    white = select_labels(tissue, 2)
    cropped = crop(t1w, white, 5.0)
    assert all(a < b for a, b in zip(cropped.volume.baseshape, t1w.volume.baseshape))
    origin = cropped.volume.geometry.tensor.double()[:3, 3]
    original = t1w.volume.geometry.tensor.double()
    index = np.linalg.solve(original[:3, :3].numpy(), (origin - original[:3, 3]).numpy())
    assert np.allclose(index, np.round(index), atol=1e-4)
    i, j, k = np.round(index).astype(int)
    assert float(cropped.volume.tensor[0, 0, 0, 0]) == float(t1w.volume.tensor[0, i, j, k])
    # the template's background is exactly zero: no noise to estimate SNR from
    with pytest.raises(ProgramError, match='snr: the background of img0 .*constant'):
        snr(t1w, white)
