"""Partial labels: the Colin27 source's label maps and the dense loss on group labels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from dense_helpers import LESIONS, one_hot_logits, random_case, tiny_config
from vpcli.vision.dense_training import composite_matrix, dense_loss

# tiny_config's classes: 0 background, 1 L-WM, 2 R-WM, 3 L-hippocampus, 4 R-hippocampus,
# 5 L-superiorfrontal, 6 R-superiorfrontal
CLASSES = 7


@pytest.fixture(scope='module')
def composites() -> torch.Tensor:
    return composite_matrix(tiny_config())


def _groups(*members) -> torch.Tensor:
    groups = torch.zeros(len(members), CLASSES, dtype=torch.bool)
    for g, classes in enumerate(members):
        groups[g, list(classes)] = True
    return groups


def test_a_group_voxel_costs_nothing_for_any_of_its_classes_and_much_for_others(composites):
    labels = torch.full((1, 4, 4, 4), CLASSES)  # every voxel: group 0 = {1, 3}
    groups = _groups((1, 3))
    lesions = torch.zeros(1, len(LESIONS), 4, 4, 4)
    for inside in (1, 3):
        _, parts = dense_loss(one_hot_logits(torch.full_like(labels, inside), CLASSES, lesions),
                              labels, lesions, composites, groups=groups)
        assert parts['ce'] < 1e-6
    _, outside = dense_loss(one_hot_logits(torch.full_like(labels, 2), CLASSES, lesions),
                            labels, lesions, composites, groups=groups)
    assert outside['ce'] > 30


def test_what_the_network_says_where_nothing_is_known_does_not_count(composites):
    classes, labels, logits, lesions = random_case(7)
    labels[:, :2] = CLASSES  # a group of every class: brain-or-anything, nothing known
    groups = _groups(range(CLASSES))
    loss, _ = dense_loss(logits, labels, lesions, composites, groups=groups)
    changed = logits.clone()
    changed[:, :classes, :2] = torch.randn_like(changed[:, :classes, :2]) * 5
    again, _ = dense_loss(changed, labels, lesions, composites, groups=groups)
    assert float(again) == pytest.approx(float(loss), abs=1e-5)
    elsewhere = logits.clone()
    elsewhere[:, :classes, 3:] += torch.randn_like(elsewhere[:, :classes, 3:]) * 5
    moved, _ = dense_loss(elsewhere, labels, lesions, composites, groups=groups)
    assert abs(float(moved) - float(loss)) > 1e-3


def test_without_group_voxels_the_loss_is_the_plain_one(composites):
    _, labels, logits, lesions = random_case(8)
    plain, plain_parts = dense_loss(logits, labels, lesions, composites)
    grouped, grouped_parts = dense_loss(logits, labels, lesions, composites,
                                        groups=_groups((1, 3), (2, 4)))
    assert float(grouped) == pytest.approx(float(plain), abs=1e-6)
    assert grouped_parts == pytest.approx(plain_parts, abs=1e-6)


def test_a_group_inside_a_composite_counts_as_that_composite(composites):
    # group {1, 2}: left or right white matter; both lie in every composite that holds
    # all white matter, so predicting either one there is a perfect union
    labels = torch.zeros(1, 4, 4, 4, dtype=torch.long)
    labels[:, 1:3] = CLASSES
    groups = _groups((1, 2))
    lesions = torch.zeros(1, len(LESIONS), 4, 4, 4)
    guess = labels.clone()
    guess[:, 1:3] = 1
    _, parts = dense_loss(one_hot_logits(guess, CLASSES, lesions), labels, lesions, composites,
                          groups=groups)
    holds_both = composites[[1, 2]].all(0)
    assert bool(holds_both.any())
    assert parts['ce'] < 1e-6 and parts['composite_dice'] > 0.99


def test_colin_label_maps_follow_aal_and_the_intensity_classes():
    from vpcli.synth.colin import group_id, label_maps
    shape = (12, 6, 6)
    t1 = np.full(shape, 100.0)  # white
    t1[:, :2] = 60.0  # grey
    t1[:, 5] = 20.0  # fluid
    brain = np.ones(shape, bool)
    brain[:, :, 5] = False
    aal = np.zeros(shape, np.int32)
    aal[:6, :2, :2] = 37  # Hippocampus_L over grey
    aal[:6, 2:4, :2] = 37  # ... reaching into white
    aal[6:, :2, :2] = 3  # Frontal_Sup_R over grey
    aal[:6, :2, 2:4] = 91  # Cerebelum_Crus1_L, grey
    names = {37: 'Hippocampus_L', 3: 'Frontal_Sup_R', 91: 'Cerebelum_Crus1_L'}
    x_mm = np.broadcast_to((np.arange(12) - 5.5)[:, None, None], shape)
    labels, generation = label_maps(t1, brain, aal, names, x_mm)
    assert (labels[:6, :2, :2] == 17).all() and (generation[:6, :2, :2] == 17).all()
    assert (labels[:6, 2:4, :2] == group_id('brain')).all()
    assert (labels[6:, :2, :2] == group_id('right-cortex')).all()
    assert (labels[:6, :2, 2:4] == 8).all()
    assert (labels[:6, 4, 2:5] == group_id('left-white')).all()
    assert (labels[6:, 4, 2:5] == group_id('right-white')).all()
    assert (labels[:, 5, :5] == group_id('fluid')).all()
    assert (labels[:, :, 5] == 0).all() and (generation[:, :, 5] == 0).all()
    assert (generation[brain] > 0).all() and (generation < 3000).all()


@pytest.mark.slow
def test_the_colin_source_trains_with_groups_that_mirror_left_and_right():
    if not Path('/usr/share/mricron/templates/aal.nii.gz').is_file():
        pytest.skip('the colin27 source needs the Debian package mricron-data')
    from vpcli.synth.colin import group_id, groups
    from vpcli.synth.dense import DenseSynthesizer, SynthesisSettings
    from vpcli.synth.vocabulary import load_vocabulary
    ids = load_vocabulary().ids
    classes = len(ids) + 1
    synthesizer = DenseSynthesizer(ids, LESIONS, 'cpu', SynthesisSettings(shape=(32, 32, 32)),
                                   sources=('colin27',), seed=3)
    batch = synthesizer.sample(2)
    assert batch.groups.shape == (len(groups()), classes)
    assert int(batch.labels.max()) >= classes  # group voxels are there
    left = classes + group_id('left-white') - group_id('left-cortex')
    right = classes + group_id('right-white') - group_id('left-cortex')
    assert int(synthesizer.mirror[left]) == right and int(synthesizer.mirror[right]) == left
    fluid = classes + group_id('fluid') - group_id('left-cortex')
    assert int(synthesizer.mirror[fluid]) == fluid
    loss, parts = dense_loss(torch.randn(2, classes + len(LESIONS), 32, 32, 32), batch.labels,
                             batch.lesions, composite_matrix(_full_config()), groups=batch.groups)
    assert torch.isfinite(loss) and 0 <= parts['dice'] <= 1


def _full_config():
    from vpcli.vision.dense_training import DenseRecipe, dense_config
    return dense_config(DenseRecipe(name='t', vision_config='dense-tiny'))


def test_debian_data_is_read_from_a_copy_and_a_missing_package_is_named(tmp_path, monkeypatch):
    from vpcli.errors import BadInputError
    from vpcli.package_data import debian_file
    copy = tmp_path / 'mricron-data' / 'mricron' / 'templates' / 'aal.nii.txt'
    copy.parent.mkdir(parents=True)
    copy.write_text('37 Hippocampus_L 4101\n')
    monkeypatch.setenv('VOXELPROMPT_PACKAGE_DATA', str(tmp_path))
    assert debian_file('mricron-data', 'mricron/templates/aal.nii.txt') == copy
    with pytest.raises(BadInputError, match='apt-get install no-such-data'):
        debian_file('no-such-data', 'no-such-data/none.nii.gz')


def test_gca_midline_white_matter_may_be_corpus_callosum_and_calibration_skips_it():
    """The GCA has no corpus callosum (cerebral white matter there): its midline white
    matter becomes the side's white group, which holds the callosum; elsewhere nothing
    changes; and the volume calibration counts no partially labelled voxel."""
    import voxel as vx

    from vpcli.synth.colin import group_id, groups
    from vpcli.synth.gca import callosum_as_partial
    from vpcli.vision.calibration import label_counts

    values = torch.zeros(41, 12, 12, dtype=torch.int32)
    values[5:20] = 2       # left cerebral white matter, x 5..19
    values[21:36] = 41     # right, x 21..35: the midplane is x = 20
    values[8:10, :2] = 17  # a left hippocampus, far from the midline
    values[31:33, :2] = 53
    volume = vx.Volume(values[None], vx.AcquisitionGeometry((41, 12, 12), torch.eye(4)))
    out = callosum_as_partial(volume, half_width_mm=3.5).tensor[0]
    left, right = group_id('left-white'), group_id('right-white')
    assert set(out[17:20].unique().tolist()) == {left}  # 1-3 mm left of the midplane
    assert set(out[21:24].unique().tolist()) == {right}
    assert set(out[5:17, 2:].unique().tolist()) == {2}  # 4 mm and more
    assert set(out[24:36, 2:].unique().tolist()) == {41}
    assert bool((out[8:10, :2] == 17).all()) and bool((out[20] == 0).all())
    assert 251 in groups()['left-white'] and 255 in groups()['right-white']

    # calibration: a partial voxel counts neither as truth nor as mask
    logits = torch.full((3, 4, 1, 1), -5.0)
    logits[1] = 5.0  # class 1 everywhere
    truth = torch.tensor([1, 1, 7, 7]).view(4, 1, 1)  # two known voxels, two partial (7 >= K)
    true, mask, _, overlap = label_counts([logits], [truth], torch.zeros(3))
    assert true.tolist() == [0, 2, 0] and mask.tolist() == [0, 2, 0] and overlap[1] == 2
