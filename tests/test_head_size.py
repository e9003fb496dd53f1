"""Head size (eTIV) from a dense network's labels, and volume ranges scaled to the head."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from vpcli.quality import REFERENCE_ETIV_ML, assess
from vpcli.vision.config import VisionConfig
from vpcli.vision.head_size import ETIV_SCALE_ML, atlas_table, estimate

REPO = Path(__file__).resolve().parent.parent


def _labels(count: int = 30, shape=(40, 44, 36), seed: int = 0) -> np.ndarray:
    """A label array of ``count`` blobs (labels 1..count) at random places."""
    rng = np.random.default_rng(seed)
    labels = np.zeros(shape, dtype=np.int64)
    grid = np.indices(shape).transpose(1, 2, 3, 0)
    for label in range(1, count + 1):
        centre = rng.uniform(6, np.array(shape) - 6)
        radius = rng.uniform(2, 4)
        labels[np.linalg.norm(grid - centre, axis=-1) < radius] = label
    return labels


def _affine(scale=(1.0, 1.0, 1.0), shift=(0.0, 0.0, 0.0)) -> np.ndarray:
    affine = np.diag([*scale, 1.0])
    affine[:3, 3] = shift
    return affine


def test_a_known_head_size_is_recovered_exactly():
    labels = _labels()
    atlas = atlas_table(labels, _affine(), range(1, 31))
    # the same head with 1.1 x 0.95 x 1.2 mm voxels: its volume is 1.254 times the atlas's
    subject = _affine((1.1, 0.95, 1.2), (-20.0, 7.0, 3.0))
    head = estimate(labels, subject, atlas)
    assert head['labels'] == 30 and head['rms_mm'] < 1e-6
    assert head['etiv_ml'] == pytest.approx(ETIV_SCALE_ML * 1.1 * 0.95 * 1.2, rel=1e-4)


def test_a_mislabelled_structure_does_not_move_the_estimate():
    labels = _labels()
    atlas = atlas_table(labels, _affine(), range(1, 31))
    moved = labels.copy()
    moved[labels == 5] = 0
    moved[30:36, 2:8, 2:8] = 5  # structure 5 found in the wrong place
    head = estimate(moved, _affine((1.05, 1.05, 1.05)), atlas)
    assert head['labels'] == 29
    assert head['etiv_ml'] == pytest.approx(ETIV_SCALE_ML * 1.05 ** 3, rel=0.01)


def test_too_few_labels_give_no_estimate():
    labels = _labels()
    atlas = atlas_table(labels, _affine(), range(1, 31))
    partial = np.where(labels <= 12, labels, 0)  # 12 labels found: fewer than MIN_LABELS
    assert estimate(partial, _affine(), atlas) is None
    assert estimate(labels, _affine(), ()) is None


def test_config_keeps_atlas_centroids_and_checks_their_count():
    config = VisionConfig(label_ids=(17, 53), label_names=('Left-Hippocampus', 'Right-Hippocampus'),
                          atlas_centroids=((-25, -20, -15, 4.1), (26, -20, -15, 4.2)))
    again = VisionConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config and again.atlas_centroids[1] == (26.0, -20.0, -15.0, 4.2)
    with pytest.raises(ValueError, match='atlas_centroids'):
        VisionConfig(label_ids=(17,), label_names=('Left-Hippocampus',),
                     atlas_centroids=((1, 2, 3, 4), (1, 2, 3, 4)))


def test_volume_ranges_follow_the_head_size():
    """The hippocampus range 2-6.5 mL is drawn for a head of REFERENCE_ETIV_ML."""
    assert REFERENCE_ETIV_ML == 1500.0
    # 8 mL: too big for a typical head, plausible in a head of eTIV 2,160 mL (an MNI-space scan)
    assert assess('left hippocampus', 8.0, {})['flags']
    block = assess('left hippocampus', 8.0, {'etiv_ml': 2160.0})
    assert block['flags'] == [] and block['plausible_ml'] == pytest.approx([2.88, 9.36])
    assert block['icv_fraction'] == pytest.approx(8.0 / 2160.0, rel=1e-3)
    # 6 mL in a small head (eTIV 1,000 mL: range 1.33-4.33 mL) is flagged, and says why
    small = assess('left hippocampus', 6.0, {'etiv_ml': 1000.0})
    assert small['flags'] and 'for a head of eTIV 1000 mL' in small['flags'][0]
    # the answer of issue 23 (a 92.9 mL hippocampus) is flagged whatever the head
    assert assess('left hippocampus', 92.9, {'etiv_ml': 2000.0})['flags']


def _example_head(path: Path, threads: int = 2) -> dict | None:
    import torch

    from vpcli.vision.model import VisionNetwork
    from vpcli.volumes import load_scans

    torch.set_num_threads(threads)
    network = VisionNetwork.load(REPO / 'weights' / 'vision.pt')
    with torch.no_grad():
        return network.head_sizes(network.encode(load_scans([path])))[0]


@pytest.mark.slow
def test_the_shipped_network_measures_a_scaled_head_by_its_scale(example_dataset, tmp_path):
    """The example scan, and the same scan with its voxels 0.9 times as large on every axis
    (a head of 0.729 times the volume): the eTIV moves by that ratio to within 5 %."""
    image = nib.load(example_dataset['T1w'])
    affine = image.affine.copy()
    affine[:3, :3] *= 0.9
    scaled = tmp_path / 'scaled.nii.gz'
    nib.save(nib.Nifti1Image(np.asarray(image.dataobj), affine), scaled)
    full = _example_head(example_dataset['T1w'])
    small = _example_head(scaled)
    assert full is not None and small is not None
    print(f'\neTIV {full["etiv_ml"]} mL, scaled by 0.729: {small["etiv_ml"]} mL '
          f'({small["etiv_ml"] / full["etiv_ml"]:.3f})')
    assert small['etiv_ml'] / full['etiv_ml'] == pytest.approx(0.729, rel=0.05)
    # the MNI152 template is an MNI-space head: slightly larger than MNI305's
    assert ETIV_SCALE_ML <= full['etiv_ml'] <= 1.25 * ETIV_SCALE_ML
