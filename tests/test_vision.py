"""The vision network: native geometry, sessions, φ, invariances and checkpoints.

Tiny configs and volumes (a few thousand voxels per stream) on the nontrivial test
geometries: 1 mm isotropic, 0.9 x 0.9 x 5 mm thick slices, 2 x 2 x 3 mm oblique, and
RAS/LPS/LIA voxel orders.
"""

from __future__ import annotations

import datetime as dt

import pytest
import torch
import voxel as vx

from conftest import make_geometry, sphere_phantom
from vpcli.errors import ProgramError
from vpcli.library.context import FeedbackItem, RunContext
from vpcli.library.vision import encode, segment
from vpcli.vision.config import VisionConfig
from vpcli.vision.layers import NativeConv, world_aligned_shared_grid
from vpcli.vision.model import Encoding, VisionNetwork, session_groups
from vpcli.vision.preprocess import prepare_scan
from vpcli.volumes import Mask, Scan, SourceRef, same_grid

TINY = VisionConfig(widths=(4, 8, 8, 8), embedding_width=12, head_margin_mm=6.0, seed=3)

#: small stream geometries: (shape, spacing mm, orientation, rotation deg, centre mm)
STREAM_GEOMETRIES = [
    dict(shape=(22, 24, 20), spacing_mm=(1.0, 1.0, 1.0), orientation='RAS'),
    dict(shape=(26, 24, 6), spacing_mm=(0.9, 0.9, 5.0), orientation='LPS', center_mm=(1.0, -2.0, 3.0)),
    dict(shape=(12, 11, 9), spacing_mm=(2.0, 2.0, 3.0), orientation='LIA',
         rotation_deg=(12.0, -8.0, 20.0), center_mm=(-1.0, 2.0, 0.5)),
    dict(shape=(20, 6, 22), spacing_mm=(1.0, 4.0, 1.0), orientation='LIA', center_mm=(0.5, 0.0, -1.0)),
    dict(shape=(18, 20, 16), spacing_mm=(1.2, 1.2, 1.2), orientation='LPS',
         rotation_deg=(0.0, 0.0, 15.0)),
    dict(shape=(24, 22, 7), spacing_mm=(1.0, 1.0, 4.0), orientation='RAS', center_mm=(0.0, 1.0, 0.0)),
    dict(shape=(14, 14, 12), spacing_mm=(1.6, 1.6, 2.0), orientation='LIA'),
    dict(shape=(20, 20, 18), spacing_mm=(1.1, 1.1, 1.3), orientation='RAS', rotation_deg=(5.0, 5.0, 0.0)),
]


def make_scan(index: int, session: str | None = None, date: dt.date | None = None,
              seed: int = 0) -> Scan:
    """A noisy sphere ('head') of radius 7 mm at the world origin on stream geometry ``index``."""
    geometry = make_geometry(**STREAM_GEOMETRIES[index])
    generator = torch.Generator().manual_seed(seed + index)
    head = sphere_phantom(geometry, (0.0, 0.0, 0.0), 7.0).tensor.float()
    noise = torch.rand(head.shape, generator=generator)
    volume = vx.Volume(head * (80 + 20 * noise) + 3 * noise, geometry)
    name = f'img{index}'
    return Scan(volume=volume, name=name, session=session, date=date,
                sources=(SourceRef(name, f'{name}.nii.gz'),))


@pytest.fixture(scope='module')
def network() -> VisionNetwork:
    torch.set_num_threads(1)
    return VisionNetwork(TINY).eval()


def phi_rows(count: int, seed: int) -> torch.Tensor:
    return torch.randn(count, TINY.phi_size, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize('count', [1, 2, 3, 8])
def test_streams_run_forward_and_backward(count):
    network = VisionNetwork(TINY).train()
    scans = [make_scan(i) for i in range(count)]
    encoder_phi = phi_rows(count, 1).requires_grad_()
    generator_phi = phi_rows(count, 2).requires_grad_()
    encoding = network.encode(scans, phi=encoder_phi)
    assert encoding.embeddings.shape == (count, TINY.embedding_width)
    probabilities = network.segment_probabilities(encoding, phi=generator_phi)
    assert len(probabilities) == count
    for scan, probability in zip(scans, probabilities):
        assert same_grid(probability, scan.volume)
        assert 0 <= float(probability.tensor.detach().min()) <= float(probability.tensor.detach().max()) <= 1
    loss = sum(p.tensor.mean() for p in probabilities) + encoding.embeddings.square().mean()
    loss.backward()
    # gradients reach both φ (encoder and generator) and every weight that was used
    assert float(encoder_phi.grad.abs().sum()) > 0
    assert float(generator_phi.grad.abs().sum()) > 0
    unused = {name for name, p in network.named_parameters() if p.grad is None}
    if count == 1:  # attention with one stream has weight 1: query and key get no gradient
        unused = {n for n in unused if '.query.' not in n and '.key.' not in n}
    assert not unused


def test_masks_land_on_each_session_input_grid(network):
    scans = [make_scan(1, session='02', date=dt.date(2021, 5, 1)),
             make_scan(0, session='01', date=dt.date(2020, 1, 1)),
             make_scan(2, session='02', date=dt.date(2021, 5, 1)),
             make_scan(3, session='01', date=dt.date(2020, 1, 1))]
    context = RunContext(scans=scans, vision=network)
    enc = encode(context, *scans)
    masks = segment(context, enc, 'left hippocampus', phi=phi_rows(1, 5)[0])
    assert isinstance(masks, tuple) and len(masks) == 2
    # oldest session first; each mask on its session's first scan (input order)
    for mask, first, others in ((masks[0], scans[1], scans[3]), (masks[1], scans[0], scans[2])):
        assert isinstance(mask, Mask) and mask.volume.tensor.dtype == torch.bool
        assert tuple(mask.volume.baseshape) == tuple(first.volume.baseshape)
        assert torch.equal(mask.volume.geometry.tensor, first.volume.geometry.tensor)
        assert mask.description == 'left hippocampus'
        assert [s.name for s in mask.sources] == [first.name, others.name]
    assert [saved.kind for saved in context.saved] == ['mask', 'mask']
    assert context.saved[0].volume is masks[0]


def test_session_mask_is_max_of_stream_probabilities(network):
    scans = [make_scan(0), make_scan(1), make_scan(2)]  # no session labels: one session
    enc = network.encode(scans)
    phi = phi_rows(3, 7)
    merged = network.session_probabilities(enc, phi)
    assert len(merged) == 1
    per_stream = network.segment_probabilities(enc, phi)
    # the first stream's own probabilities never exceed the merged ones on its grid
    assert bool((merged[0].tensor >= per_stream[0].tensor - 1e-6).all())
    mask = network.segment(enc, 'x', phi=phi)
    assert torch.equal(mask.volume.tensor, (merged[0].tensor > 0.5).cpu())


def test_results_do_not_depend_on_stream_order_within_a_session(network):
    scans = [make_scan(0), make_scan(1), make_scan(2), make_scan(4)]
    phi = phi_rows(4, 11)
    order = [0, 3, 1, 2]  # the first scan stays first, so the session mask grid is the same
    enc = network.encode(scans, phi=phi)
    enc_permuted = network.encode([scans[i] for i in order], phi=phi[order])
    generator_phi = phi_rows(4, 12)
    probabilities = network.segment_probabilities(enc, generator_phi)
    permuted = network.segment_probabilities(enc_permuted, generator_phi[order])
    for position, index in enumerate(order):
        torch.testing.assert_close(permuted[position].tensor, probabilities[index].tensor,
                                   atol=2e-5, rtol=0)
    torch.testing.assert_close(enc_permuted.embeddings, enc.embeddings[order], atol=2e-5, rtol=0)
    merged = network.session_probabilities(enc, generator_phi)[0].tensor
    mask = network.segment(enc, 'x', generator_phi).volume.tensor
    mask_permuted = network.segment(enc_permuted, 'x', generator_phi[order]).volume.tensor
    decided = (merged - 0.5).abs() > 1e-4  # voxels not at the threshold within rounding
    assert torch.equal(mask[decided], mask_permuted[decided])


def test_phi_conditions_the_output(network):
    scans = [make_scan(0)]
    enc = network.encode(scans)
    first = network.generate(enc, phi_rows(1, 1))[0]
    second = network.generate(enc, phi_rows(1, 2))[0]
    assert float((first - second).detach().abs().max()) > 1e-3
    # one vector is broadcast to every stream; None means zeros
    torch.testing.assert_close(network.generate(enc, [0.0] * TINY.phi_size)[0],
                               network.generate(enc, None)[0])


def test_phi_of_the_wrong_shape_is_a_program_error(network):
    scans = [make_scan(0), make_scan(2)]
    context = RunContext(scans=scans, vision=network)
    enc = encode(context, *scans)
    with pytest.raises(ProgramError, match='phi has shape'):
        segment(context, enc, 'x', phi=[0.0] * 5)
    with pytest.raises(ProgramError, match='phi has shape'):
        segment(context, enc, 'x', phi=[[0.0] * TINY.phi_size] * 3)
    with pytest.raises(ProgramError, match='phi must be numbers'):
        segment(context, enc, 'x', phi=['a'] * TINY.phi_size)


def test_library_errors_without_network_or_with_bad_arguments(network):
    scan = make_scan(0)
    with pytest.raises(ProgramError, match='no vision network'):
        encode(RunContext(scans=[scan]), scan)
    context = RunContext(scans=[scan], vision=network)
    with pytest.raises(ProgramError, match='at least one scan'):
        encode(context)
    with pytest.raises(ProgramError, match='argument 1 is a int'):
        encode(context, 3)
    with pytest.raises(ProgramError, match='not an encoding'):
        segment(context, scan, 'x')


def test_encoding_feedback_is_one_embedding_per_scan(network):
    scans = [make_scan(0), make_scan(1)]
    enc = network.encode(scans)
    feedback = enc.to_feedback()
    assert isinstance(feedback, FeedbackItem)
    assert feedback.embeddings.shape == (2, TINY.embedding_width)
    assert 'img0' in feedback.text and 'img1' in feedback.text
    assert str(enc) == 'Encoding(img0, img1)'


def test_checkpoint_round_trip_gives_identical_outputs(network, tmp_path):
    scans = [make_scan(0), make_scan(1)]
    phi = phi_rows(2, 4)
    path = network.save(tmp_path / 'vision.pt')
    loaded = VisionNetwork.load(path)
    assert loaded.config == network.config
    expected = network.generate(network.encode(scans, phi), phi)
    actual = loaded.generate(loaded.encode(scans, phi), phi)
    for a, b in zip(expected, actual):
        assert torch.equal(a, b)


def test_checkpoint_with_missing_weights_is_refused(network, tmp_path):
    from vpcli.errors import BadInputError
    state = network.state_dict()
    state.pop('head.bias')
    torch.save({'config': network.config.to_dict(), 'state': state}, tmp_path / 'bad.pt')
    with pytest.raises(BadInputError, match='not a usable vision checkpoint'):
        VisionNetwork.load(tmp_path / 'bad.pt')
    with pytest.raises(BadInputError, match='no such vision checkpoint'):
        VisionNetwork.load(tmp_path / 'missing.pt')


def test_initialisation_is_seeded():
    a, b = VisionNetwork(TINY), VisionNetwork(TINY)
    other = VisionNetwork(VisionConfig(widths=TINY.widths, embedding_width=12, seed=4))
    for name, value in a.state_dict().items():
        assert torch.equal(value, b.state_dict()[name])
    assert not torch.equal(a.head.weight, other.head.weight)


def test_thick_slices_are_not_pooled_at_the_first_levels(network):
    thick = make_scan(1)  # 0.9 x 0.9 x 5 mm
    enc = network.encode([thick])
    spacings = [g[0].spacing.tolist() for g in enc.geometries]
    slice_axis = int(enc.geometries[0][0].slice_direction)
    assert spacings[0][slice_axis] == pytest.approx(5.0)
    assert spacings[1][slice_axis] == pytest.approx(5.0)  # ratio 5.6 > 2: slices kept
    assert spacings[2][slice_axis] == pytest.approx(5.0)  # ratio 2.8 > 2: slices kept
    assert spacings[3][slice_axis] == pytest.approx(10.0)  # ratio 1.4: pooled at last
    in_plane = [a for a in range(3) if a != slice_axis]
    assert [spacings[1][a] for a in in_plane] == pytest.approx([1.8, 1.8])


def test_thick_slice_levels_convolve_within_slices():
    torch.manual_seed(0)
    conv = NativeConv(1, 2, anisotropy_threshold=2.0)
    thick = make_geometry((8, 8, 5), (0.9, 0.9, 5.0), 'RAS')
    iso = make_geometry((8, 8, 5), (1.0, 1.0, 1.0), 'RAS')
    impulse = torch.zeros(1, 8, 8, 5)
    impulse[0, 4, 4, 2] = 1.0
    bias = conv.conv.bias.detach().view(-1, 1, 1, 1)
    with torch.no_grad():
        response_thick = (conv(impulse, thick) - bias).abs().sum(dim=(0, 1, 2))
        response_iso = (conv(impulse, iso) - bias).abs().sum(dim=(0, 1, 2))
    assert float(response_thick[2]) > 0 and float(response_thick[[1, 3]].sum()) == 0
    assert float(response_iso[[1, 3]].sum()) > 0


def test_preparation_is_undone_exactly(geometry):
    from conftest import sphere_phantom as phantom
    volume = phantom(geometry, (0.0, 0.0, 0.0), 6.0).float()
    volume = volume.new(volume.tensor * 50 + 10)
    scan = Scan(volume=volume, name='img0')
    prepared = prepare_scan(scan, TINY)
    assert prepared.volume.geometry.orientation.name == 'RAS'
    assert 0 <= float(prepared.volume.tensor.min()) and float(prepared.volume.tensor.max()) <= 1
    assert prod(prepared.volume.baseshape) <= prod(volume.baseshape)
    restored = prepared.restore(prepared.volume.tensor)
    assert same_grid(restored, volume)
    low, high = prepared.intensity_range
    expected = ((volume.tensor - low) / (high - low)).clamp(0, 1)
    inside = restored.tensor > 0
    # every voxel of the head survives the crop, at the same place on the input grid
    assert torch.equal(inside, expected > 0)
    torch.testing.assert_close(restored.tensor[inside], expected[inside])


def prod(shape) -> int:
    result = 1
    for n in shape:
        result *= int(n)
    return result


def test_outputs_do_not_depend_on_intensity_scale(network):
    scan = make_scan(2)
    rescaled = Scan(volume=scan.volume.new(scan.volume.tensor * 7.5 + 100.0), name='img2')
    phi = phi_rows(1, 9)
    a = network.generate(network.encode([scan]), phi)[0]
    b = network.generate(network.encode([rescaled]), phi)[0]
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


def test_shared_grid_covers_all_streams_at_the_finest_spacing():
    geometries = [make_geometry(**STREAM_GEOMETRIES[i]) for i in (0, 1, 2)]
    shared = world_aligned_shared_grid(geometries)
    assert shared.spacing.tolist() == pytest.approx([0.9, 0.9, 1.0], abs=1e-5)
    assert shared.orientation.name == 'RAS'
    reversed_shared = world_aligned_shared_grid(geometries[::-1])
    assert torch.equal(shared.tensor, reversed_shared.tensor)
    assert shared.baseshape == reversed_shared.baseshape


def test_sessions_sorted_by_date_else_input_order():
    a = make_scan(0, session='b', date=dt.date(2022, 1, 1))
    b = make_scan(1, session='a', date=dt.date(2021, 1, 1))
    c = make_scan(2, session='b', date=dt.date(2022, 1, 1))
    assert session_groups([a, b, c]) == [[1], [0, 2]]
    undated = make_scan(3, session='c')
    assert session_groups([a, b, c, undated]) == [[0, 2], [1], [3]]
    assert session_groups([make_scan(0), make_scan(1)]) == [[0, 1]]


def test_streams_interact(network):
    alone = network.generate(network.encode([make_scan(0)]), phi_rows(1, 3))[0]
    together = network.generate(network.encode([make_scan(0), make_scan(1)]), phi_rows(1, 3)[0])[0]
    assert float((alone - together).detach().abs().max()) > 1e-4


@pytest.mark.parametrize('index', [0, 1, 2])
def test_fast_upsampling_matches_voxel_resampling(index):
    from vpcli.vision.layers import pooling_factors, upsample
    fine = make_geometry(**STREAM_GEOMETRIES[index])
    features = torch.randn(3, *fine.baseshape, generator=torch.Generator().manual_seed(index))
    pooled = vx.Volume(features, fine).pool(2, mode='max', spacing_ratio_thresh=2.0)
    assert pooling_factors(pooled.geometry, fine) is not None
    expected = pooled.resample_like(fine, mode='linear', padding_mode='border').tensor
    torch.testing.assert_close(upsample(pooled.tensor, pooled.geometry, fine), expected,
                               atol=1e-4, rtol=0)


def test_working_spacing_floor_coarsens_fine_scans_and_restores_the_input_grid():
    import dataclasses
    coarse = dataclasses.replace(TINY, min_spacing_mm=2.0)
    network = VisionNetwork(coarse).eval()
    for index in (0, 1, 2):  # 1 mm iso, 0.9x0.9x5 mm, 2x2x3 mm oblique
        scan = make_scan(index)
        prepared = prepare_scan(scan, coarse)
        spacing = prepared.volume.geometry.spacing
        assert bool((spacing >= 2.0 - 1e-5).all())
        original = prepare_scan(scan, TINY).volume.geometry.spacing
        # axes already at or above the floor keep their spacing (the 5 mm and 3 mm slices)
        kept = original >= 2.0 - 1e-5
        torch.testing.assert_close(spacing[kept], original[kept])
        assert (prepared.fine_geometry is None) == bool(kept.all())
        mask = network.segment(network.encode([scan]), 'sphere', phi=phi_rows(1, index))
        assert same_grid(mask.volume, scan.volume)
    # the restore is differentiable: gradients reach the coarse-grid tensor
    prepared = prepare_scan(make_scan(0), coarse)
    tensor = prepared.volume.tensor.clone().requires_grad_(True)
    prepared.restore(tensor).tensor.sum().backward()
    assert tensor.grad is not None and float(tensor.grad.abs().sum()) > 0
