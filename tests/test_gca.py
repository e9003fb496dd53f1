"""FreeSurfer GCA atlases: the file reader, label maps drawn from the priors, the head image,
and the synthesis draws that use them (head classes, defacing, partial fields of view)."""

from __future__ import annotations

import struct

import numpy as np
import pytest
import torch

from vpcli.errors import BadInputError
from vpcli.synth.gca import read_gca, sample_label_map


def write_gca(path, priors: dict, nodes: dict, prior_shape=(4, 4, 4), mrf=True,
              centre=(1.0, 2.0, 3.0)):
    """A version-5 GCA as FreeSurfer writes it (big-endian): ``priors`` maps a prior voxel
    to ``[(label, prior)]``, ``nodes`` a node to ``[(label, mean, variance)]``."""
    node_shape = tuple(n // 2 for n in prior_shape)
    out = [struct.pack('>fff', 5.0, 2.0, 4.0), struct.pack('>6i', *prior_shape, *node_shape),
           struct.pack('>2i', 1, 0 if mrf else 1)]
    for node in np.ndindex(*node_shape):
        entries = nodes.get(node, [])
        out.append(struct.pack('>2i', len(entries), 10))
        for label, mean, variance in entries:
            out.append(struct.pack('>iff', label, mean, variance))
            if mrf:
                for neighbour in range(6):  # Gibbs lists of varying length, skipped
                    out.append(struct.pack('>i', neighbour % 3))
                    out.extend(struct.pack('>if', label, 1.0) for _ in range(neighbour % 3))
    for voxel in np.ndindex(*prior_shape):
        entries = priors.get(voxel, [])
        out.append(struct.pack('>2i', len(entries), 10))
        out.extend(struct.pack('>if', label, p) for label, p in entries)
    # tagged section: type, then direction cosines of an LIA conformed grid
    out.append(struct.pack('>i', 0xAB2C))
    out.append(struct.pack('>3i', 2, 1, 0))
    n = prior_shape[0] * 2
    out.append(struct.pack('>i12f3i3f', 3, -1, 0, 0, 0, 0, -1, 0, 1, 0, *centre, n, n, n, 1, 1, 1))
    path.write_bytes(b''.join(out))
    return path


def test_reader_returns_the_priors_means_and_grid_it_was_given(tmp_path):
    priors = {(1, 1, 1): [(17, 0.25), (2, 0.75)], (2, 1, 1): [(0, 1.0)],
              (1, 2, 2): [(4, 0.5), (43, 0.3), (2, 0.2)]}
    nodes = {(0, 0, 0): [(2, 110.0, 25.0), (17, 80.0, 9.0)], (1, 1, 1): [(4, 30.0, 4.0)]}
    for mrf in (True, False):
        atlas = read_gca.__wrapped__(write_gca(tmp_path / f'a{mrf}.gca', priors, nodes, mrf=mrf))
        assert atlas.prior_labels.shape[:3] == (4, 4, 4) and atlas.node_labels.shape[:3] == (2, 2, 2)
        assert atlas.prior_labels[1, 1, 1, :2].tolist() == [2, 17]  # most likely first
        assert atlas.priors[1, 1, 1, :2].tolist() == pytest.approx([0.75, 0.25])
        assert atlas.prior_labels[1, 2, 2, :3].tolist() == [4, 43, 2]
        assert atlas.prior_labels[0, 0, 0, 0] == -1 and atlas.priors[0, 0, 0].sum() == 0
        assert atlas.node_labels[0, 0, 0, :2].tolist() == [2, 17]
        assert atlas.node_means[0, 0, 0, :2].tolist() == [110.0, 80.0]
        assert atlas.node_variances[1, 1, 1, 0] == 4.0
        assert atlas.label_mean(2) == 110.0 and np.isnan(atlas.label_mean(99))
        assert sorted(set(atlas.prior_labels[atlas.prior_labels >= 0].tolist())) == [0, 2, 4, 17, 43]
        # LIA grid centred at (1, 2, 3): voxel (4, 4, 4) (the centre) maps to it
        centre = atlas.conformed @ np.array([4, 4, 4, 1.0])
        assert centre[:3].tolist() == pytest.approx([1, 2, 3])
        assert atlas.conformed[:3, :3].tolist() == [[-1, 0, 0], [0, 0, 1], [0, -1, 0]]


def test_a_compact_copy_reads_back_the_same_atlas(tmp_path, monkeypatch):
    from vpcli.synth.gca import gca_path, write_compact
    priors = {(1, 1, 1): [(17, 0.25), (2, 0.75)], (2, 2, 2): [(4, 1.0)]}
    nodes = {(0, 0, 0): [(2, 110.0, 25.0)], (1, 1, 1): [(4, 30.0, 4.0)]}
    atlas = read_gca.__wrapped__(write_gca(tmp_path / 'a.gca', priors, nodes))
    data = tmp_path / 'data'
    compact = write_compact(atlas, data / 'smriprep_freesurfer732' / 'freesurfer' / 'average'
                            / 'RB_all_2020-01-02.gca.npz')
    monkeypatch.setenv('VOXELPROMPT_PACKAGE_DATA', str(data))
    assert gca_path('brain') == compact  # the compact copy is found first
    again = read_gca.__wrapped__(compact)
    assert np.array_equal(again.prior_labels, atlas.prior_labels)
    assert np.allclose(again.priors, atlas.priors, atol=1e-3)
    assert np.array_equal(again.node_labels, atlas.node_labels)
    assert np.allclose(again.node_means, atlas.node_means, rtol=1e-3)
    assert np.array_equal(again.conformed, atlas.conformed) and again.shape == atlas.shape
    (tmp_path / 'bad.npz').write_bytes(b'not a zip')
    with pytest.raises(BadInputError, match='not a compact GCA'):
        read_gca.__wrapped__(tmp_path / 'bad.npz')


def test_reader_refuses_what_it_does_not_know(tmp_path):
    good = write_gca(tmp_path / 'a.gca', {(0, 0, 0): [(2, 1.0)]}, {})
    bad_version = tmp_path / 'v.gca'
    bad_version.write_bytes(struct.pack('>f', 4.0) + good.read_bytes()[4:])
    with pytest.raises(BadInputError, match='version 4'):
        read_gca.__wrapped__(bad_version)
    truncated = tmp_path / 't.gca'
    truncated.write_bytes(good.read_bytes()[:200])
    with pytest.raises(BadInputError, match='truncated'):
        read_gca.__wrapped__(truncated)


def test_the_most_likely_draw_is_the_arg_max_of_the_priors(tmp_path):
    # two structures side by side (x < 2 and x >= 2 on the prior grid), both mixed with
    # white matter, inside a background shell
    priors = {}
    for voxel in np.ndindex(4, 4, 4):
        if voxel[1] in (0, 3) or voxel[2] in (0, 3):
            priors[voxel] = [(0, 1.0)]
        elif voxel[0] < 2:
            priors[voxel] = [(17, 0.7), (2, 0.3)]
        else:
            priors[voxel] = [(41, 0.6), (2, 0.4)]
    atlas = read_gca.__wrapped__(write_gca(tmp_path / 'a.gca', priors, {}))
    drawn = sample_label_map(atlas, seed=3, strength=0.0, offset=0.0, margin=4)
    data = drawn.tensor[0].numpy()
    assert data.shape == (8, 8, 8)
    inner = data[:, 3:5, 3:5]
    assert (inner[:4] == 17).all() and (inner[4:] == 41).all()  # no white matter between them
    assert (data[:, 0] == 0).all() and (data[:, :, 7] == 0).all()
    # other draws move boundaries and change sizes but keep the label set
    for seed in range(4):
        other = sample_label_map(atlas, seed=seed, strength=0.4, offset=0.3, margin=4)
        assert set(np.unique(other.tensor[0].numpy())) <= {0, 2, 17, 41}


@pytest.fixture(scope='module')
def fsaverage_gca():
    pytest.importorskip('smriprep_freesurfer732')
    from vpcli.synth.gca import gca_path
    try:
        return read_gca(str(gca_path('brain'))), read_gca(str(gca_path('head')))
    except BadInputError as error:
        pytest.skip(str(error))


@pytest.mark.slow
def test_draws_from_freesurfer_atlas_are_aligned_varied_brains(fsaverage_gca):
    """The GCA lives on fsaverage's talairach grid: its most likely labelling overlaps
    fsaverage's own aseg; draws differ from one another in structure sizes."""
    from vpcli.synth.sources import fsaverage_file
    from vpcli.volumes import load_volume
    brain, _ = fsaverage_gca
    torch.set_num_threads(2)
    likely = sample_label_map(brain, 0, strength=0.0, offset=0.0)
    aseg = load_volume(fsaverage_file('aseg.mgz'), label_map=True).resample_like(
        likely.geometry, mode='nearest').tensor[0].numpy()
    ours = likely.tensor[0].numpy()
    for label in (2, 10, 12, 16, 17, 41, 49, 53):  # white matter, thalamus, putamen, ...
        a, b = ours == label, aseg == label
        assert 2 * (a & b).sum() / (a.sum() + b.sum()) > 0.65, label
    draws = [sample_label_map(brain, seed).tensor[0].numpy() for seed in (1, 2)]
    sizes = [[int((d == label).sum()) for label in (4, 17, 43, 53)] for d in draws]
    assert sizes[0] != sizes[1]
    assert all(0.6 < a / b < 1.6 for a, b in zip(*sizes))


@pytest.mark.slow
def test_a_gca_source_is_in_the_vocabulary_with_a_head(fsaverage_gca):
    from vpcli.synth.vocabulary import load_vocabulary
    vocabulary = load_vocabulary()
    from vpcli.synth.sources import gca_draw
    labels, head = gca_draw(5)
    present = set(torch.unique(labels.tensor).tolist()) - {0}
    assert present <= set(vocabulary.ids)
    parcels = {i for i in present if i >= 1000}
    assert len(parcels) >= 60  # the cortex took fsaverage's parcels, both hemispheres
    data, image = labels.tensor[0], head.tensor[0]
    white = image[data == 2].mean()
    assert 0.9 < float(white) < 1.1  # white matter about 1
    assert float(image[data == 4].mean()) < 0.6 * float(white)  # ventricles dark in T1
    outside = (data == 0) & (image > 0.2)
    assert int(outside.sum()) > 10000  # the head around the brain (scalp, skull, ...)


def test_head_classes_split_the_head_by_intensity():
    from vpcli.synth.dense import HEAD_CLASS_EDGES, head_classes
    template = torch.tensor([0.0, 0.2, 0.5, 0.9, 1.0])
    brain = torch.tensor([False, False, False, False, True])
    assert head_classes(template, brain).tolist() == [1, 2, 3, 4, 0]
    assert len(HEAD_CLASS_EDGES) == 3


def test_defacing_and_a_cut_field_of_view_touch_what_they_should():
    from vpcli.synth.dense import DenseSynthesizer, SynthesisSettings
    synth = DenseSynthesizer.__new__(DenseSynthesizer)
    synth.device = torch.device('cpu')
    synth.generator = torch.Generator().manual_seed(0)
    synth.settings = SynthesisSettings(shape=(16, 16, 16), deface_probability=1.0,
                                       field_of_view_probability=1.0)
    labels = torch.zeros((2, 16, 16, 16), dtype=torch.long)
    labels[:, 4:12, 4:12, 4:12] = 3
    image = torch.rand((2, 1, 16, 16, 16)) + 0.1
    defaced = synth._deface(image.clone(), labels)
    brain = (labels > 0).unsqueeze(1)
    assert torch.equal(defaced[brain], image[brain])  # the brain untouched
    removed = defaced == 0
    assert bool(removed.any())
    _, y, z = torch.meshgrid(*[torch.arange(16)] * 3, indexing='ij')
    assert bool(((y - z)[removed[0, 0]] > 0).all())  # only in front of and below the brain
    lesions = torch.ones((2, 2, 16, 16, 16))
    cut_image, cut_labels, cut_lesions = synth._cut_field_of_view(image, labels, lesions)
    for b in range(2):
        gone = cut_image[b, 0] == 0
        assert bool(gone.any()) and bool((~gone).any())
        assert bool((cut_labels[b][gone] == 0).all()) and bool((cut_lesions[b][:, gone] == 0).all())
        # a slab: the removed part is one side of a plane along one axis
        assert any(bool(gone.all(dim=tuple(a for a in range(3) if a != axis)).any())
                   for axis in range(3))
    assert torch.equal(labels[:, 4:12, 4:12, 4:12], torch.full((2, 8, 8, 8), 3))  # inputs kept
