"""Intensity refinement of the dense network's labels at the scan's own resolution."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import voxel as vx

from conftest import make_geometry
from test_dense_vision import scan_on, tiny_config
from vpcli.metrics import dice
from vpcli.vision.model import VisionNetwork
from vpcli.vision.refinement import _Interpolator, refine_labels


def _softmax_prior(channels: int, shape, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return (torch.randn((channels, *shape), generator=generator) * 2).softmax(0)


@pytest.mark.parametrize('rotation', [(0, 0, 0), (10, -5, 20)])
def test_the_prior_is_interpolated_as_voxel_resamples_it(rotation):
    """With every label kept, the interpolated prior equals voxel's trilinear resampling
    wherever the output voxel lies inside the working grid (axis-aligned and oblique)."""
    torch.set_num_threads(1)
    prior = _softmax_prior(5, (7, 8, 6), seed=1)
    working = make_geometry((7, 8, 6), (2.0, 2.0, 2.0), 'RAS')
    output = make_geometry((12, 14, 10), (1.0, 1.0, 1.0), 'RAS', rotation_deg=rotation)
    interpolator = _Interpolator(prior, working, output, keep=4)
    voxels = torch.arange(12 * 14 * 10)
    background, _, labels, values = interpolator.at(voxels, below=2.0)
    dense = torch.zeros(5, voxels.numel())
    dense[0] = background
    dense.scatter_add_(0, labels.long(), values)
    expected = vx.Volume(prior, working).resample_like(output).tensor.reshape(5, -1)
    ijk = torch.stack(torch.meshgrid(*(torch.arange(n) for n in (12, 14, 10)), indexing='ij'))
    world = output.tensor.double()[:3, :3] @ ijk.reshape(3, -1).double() + \
        output.tensor.double()[:3, 3:]
    source = torch.linalg.inv(working.tensor.double())[:3, :3] @ world + \
        torch.linalg.inv(working.tensor.double())[:3, 3:]
    inside = ((source >= 0) & (source <= torch.tensor([6, 7, 5])[:, None])).all(0)
    assert int(inside.sum()) > 500
    assert torch.allclose(dense[:, inside], expected[:, inside].float(), atol=1e-5)


def _phantom_grids(shape):
    """A 1 mm output grid of ``shape`` (even sides), the 2 mm working grid over it, and each
    output voxel's x index (a float tensor of ``shape``)."""
    output = make_geometry(shape, (1.0, 1.0, 1.0), 'RAS')
    working = make_geometry(tuple(n // 2 for n in shape), (2.0, 2.0, 2.0), 'RAS')
    x = torch.arange(shape[0], dtype=torch.float32).view(-1, 1, 1).expand(shape)
    return output, working, x


def _two_labels(edge: float, shift_mm: float, noise: float = 0.03, seed: int = 0):
    """A 1 mm image whose label 1 (bright) fills x < edge and label 2 (dark) the rest,
    and a 2 mm prior that blurs that edge over 8 mm and puts it ``shift_mm`` too far."""
    output, working, x = _phantom_grids((32, 12, 12))
    shape = x.shape
    truth = x < edge
    generator = torch.Generator().manual_seed(seed)
    image = torch.where(truth, 0.8, 0.4) + noise * torch.randn(shape, generator=generator)
    # working voxel i sits at output x = 2 i + 0.5
    centres = torch.arange(16, dtype=torch.float32) * 2 + 0.5
    bright = torch.sigmoid((edge + shift_mm - centres) / 2.0).view(-1, 1, 1).expand(16, 6, 6)
    prior = torch.stack([torch.full_like(bright, 0.02), 0.98 * bright, 0.98 * (1 - bright)])
    return prior, working, image, output, truth


def test_refinement_draws_the_edge_the_image_shows():
    """The prior's edge is blurred and 3.5 mm off; the refined label follows the image."""
    prior, working, image, output, truth = _two_labels(edge=13.5, shift_mm=3.5)
    refined = refine_labels(prior, working, image, output)
    before = _Interpolator(prior, working, output, keep=2)
    voxels = torch.arange(truth.numel())
    _, _, labels, values = before.at(voxels, below=2.0)
    prior_bright = (values * (labels == 1)).sum(0).reshape(truth.shape)
    after = refined.total([1])[0]
    assert dice((prior_bright > 0.5).numpy(), truth.numpy()) < 0.93
    assert dice((after > 0.5).numpy(), truth.numpy()) > 0.99
    # the fitted intensity model is the image's
    assert abs(float(refined.means[1]) - 0.8) < 0.02 and abs(float(refined.means[2]) - 0.4) < 0.02


def test_without_edge_the_background_never_moves_and_the_prior_holds_without_contrast():
    prior, working, image, output, truth = _two_labels(edge=13.5, shift_mm=3.5)
    refined = refine_labels(prior, working, image, output)
    share = refined.probabilities.sum(0)
    assert torch.allclose(share, (1 - refined.background), atol=1e-5)
    assert torch.allclose(refined.background, torch.full_like(refined.background, 0.02),
                          atol=1e-5)
    flat = refine_labels(prior, working, torch.full_like(image, 0.5), output)
    interpolator = _Interpolator(prior, working, output, keep=2)
    _, _, labels, values = interpolator.at(torch.arange(truth.numel()), below=2.0)
    expected = (values * (labels == 1)).sum(0).reshape(truth.shape)
    assert torch.allclose(flat.total([1])[0], expected, atol=1e-4)


def test_a_refining_network_segments_on_the_scan_grid_and_never_while_training():
    """At 1 mm the refined target is made on the scan's own grid; a scan at the working
    spacing is not refined; in training mode the network does not refine (gradients flow
    through the softmax alone)."""
    torch.set_num_threads(1)
    network = VisionNetwork(dataclasses.replace(tiny_config(), intensity_refinement=True)).eval()
    plain = VisionNetwork(tiny_config()).eval()  # same seed, same weights, no refinement
    scan = scan_on(shape=(20, 18, 16), spacing=1.0, seed=2)
    with torch.no_grad():
        encoding = network.encode([scan])
        assert encoding.prepared[0].fine_volume is not None
        hippocampus = network.select(encoding, 'left hippocampus')[0]
        assert tuple(hippocampus.shape[1:]) == (20, 18, 16)
        mask = network.segment(encoding, 'left hippocampus')
        assert tuple(mask.volume.baseshape) == (20, 18, 16)
        assert encoding.refined is not None and len(encoding.refined) == 1
        lobe = network.select(encoding, 'left frontal lobe')[0]
        assert tuple(lobe.shape[1:]) == (20, 18, 16)
        # the network saw every voxel of a 2 mm scan: nothing refined, the plain softmax
        coarse_scan = scan_on(shape=(10, 9, 8), spacing=2.0, seed=2)
        coarse = network.encode([coarse_scan])
        assert torch.equal(network.select(coarse, 'left hippocampus')[0],
                           plain.select(plain.encode([coarse_scan]), 'left hippocampus')[0])
        assert coarse.refined is None
        # a lesion-only target builds no refined labels, but lands on the scan's grid
        fresh = network.encode([scan])
        glioma = network.select(fresh, 'glioma')[0]
        assert fresh.refined is None and tuple(glioma.shape[1:]) == (20, 18, 16)
    network.train()
    training = network.select(network.encode([scan]), 'left hippocampus')[0]
    assert tuple(training.shape[1:]) == tuple(encoding.prepared[0].volume.tensor.shape[1:])
    assert np.isfinite(hippocampus.numpy()).all()


def test_held_labels_keep_their_prior_and_the_others_share_the_rest():
    """A held label (one the volume calibration fits) keeps its prior probability; the free
    labels share what is left by prior and intensity."""
    prior, working, image, output, truth = _two_labels(edge=13.5, shift_mm=3.5)
    prior = torch.cat([prior, 0.1 * prior[1:2]])  # a third label, present where label 1 is
    prior = prior / prior.sum(0, keepdim=True)
    held = torch.tensor([False, False, False, True])
    refined = refine_labels(prior, working, image, output, fixed=held)
    interpolator = _Interpolator(prior, working, output, keep=3)
    _, _, labels, values = interpolator.at(torch.arange(truth.numel()), below=2.0)
    share = values.sum(0, keepdim=True)
    expected = (values / share * (1 - interpolator.at(torch.arange(truth.numel()))[0]) *
                (labels == 3)).sum(0).reshape(truth.shape)
    assert torch.allclose(refined.total([3])[0], expected, atol=1e-5)
    assert torch.allclose(refined.probabilities.sum(0), (1 - refined.background), atol=1e-5)
    free = refined.total([1])[0] / (refined.total([1, 2])[0] + 1e-9)
    assert dice((free > 0.5).numpy(), truth.numpy()) > 0.99


def test_refinement_holds_the_calibrated_structures_but_not_csf_or_tissue():
    from vpcli.vision.targets import refinement_held_labels
    names = ('Left-Cerebral-White-Matter', 'Left-Hippocampus', 'Left-Lateral-Ventricle',
             'CSF', 'ctx-lh-insula', 'Left-Cerebellum-Cortex', 'Brain-Stem', '4th-Ventricle')
    assert refinement_held_labels(names) == [False, False, True, False, False, False, False,
                                             True, False]


def _brain_edge(edge: float, shift_mm: float, outside: float = 0.15, noise: float = 0.02,
                seed: int = 0):
    """A 1 mm image whose brain (label 1 at 0.75, label 2 at 0.45 in a slab inside it)
    fills x < edge and whose background (``outside``; a bright 0.8 layer 6-8 mm out, as
    scalp fat) the rest, and a 2 mm prior that blurs the brain's edge over 8 mm and puts
    it ``shift_mm`` too far out."""
    output, working, x = _phantom_grids((40, 10, 10))
    shape = x.shape
    truth = x < edge
    generator = torch.Generator().manual_seed(seed)
    image = torch.where(truth, 0.75, outside)
    image = torch.where(truth & (x < 6), 0.45, image)
    image = torch.where((x >= edge + 6) & (x < edge + 8), 0.8, image)
    image = image + noise * torch.randn(shape, generator=generator)
    centres = torch.arange(20, dtype=torch.float32) * 2 + 0.5
    brain = torch.sigmoid((edge + shift_mm - centres) / 2.0).view(-1, 1, 1).expand(20, 5, 5)
    inner = torch.sigmoid((6 - centres) / 2.0).view(-1, 1, 1).expand(20, 5, 5)
    prior = torch.stack([1 - brain, brain * (1 - inner), brain * inner])
    return prior, working, image, output, truth


@pytest.mark.parametrize('shift_mm, outside', [(3.0, 0.15), (-2.5, 0.15), (3.0, 0.0)])
def test_with_edge_the_brain_ends_where_the_scan_shows_it(shift_mm, outside):
    """The prior's brain edge is blurred and 2.5-3 mm off (too far out, too far in, and into
    the exact zeros of a skull-stripped scan); with ``edge`` the brain mask follows the image
    (the bright layer beyond the edge stays background), without it the prior's edge holds."""
    prior, working, image, output, truth = _brain_edge(22.5, shift_mm, outside=outside)
    plain = refine_labels(prior, working, image, output)
    moved = refine_labels(prior, working, image, output, edge=True)
    assert dice((plain.background < 0.5).numpy(), truth.numpy()) < 0.95
    assert dice((moved.background < 0.5).numpy(), truth.numpy()) > 0.99
    # (a voxel whose background exceeds 1 - BRAIN_FLOOR keeps no labels)
    assert torch.allclose(moved.probabilities.sum(0), 1 - moved.background, atol=1e-3)
    # the labels inside keep their own edge
    inner = moved.total([2])[0] > 0.5
    x = torch.arange(40).view(-1, 1, 1).expand(truth.shape)
    assert dice(inner.numpy(), (x < 6).numpy()) > 0.95


def test_the_edge_moves_only_where_the_prior_is_uncertain_and_held_labels_keep_theirs():
    prior, working, image, output, truth = _brain_edge(22.5, 3.0)
    prior = torch.cat([prior, 0.2 * prior[1:2]])   # a held label, present where label 1 is
    prior = prior / prior.sum(0, keepdim=True)
    held = torch.tensor([False, False, False, True])
    moved = refine_labels(prior, working, image, output, fixed=held, edge=True)
    interpolator = _Interpolator(prior, working, output, keep=3)
    voxels = torch.arange(truth.numel())
    background, _, labels, values = interpolator.at(voxels, below=2.0)
    background = background.reshape(truth.shape)
    sure = (background < 1e-3) | (background > 1 - 1e-3)
    assert int(sure.sum()) > 0 and int((~sure).sum()) > 0
    assert torch.equal(moved.background[sure], background[sure].clamp(0, 1))
    expected = (values * (labels == 3)).sum(0).reshape(truth.shape)
    assert torch.allclose(moved.total([3])[0], expected, atol=1e-5)


def test_with_edge_and_no_contrast_the_prior_holds():
    prior, working, image, output, truth = _brain_edge(22.5, 3.0)
    flat = refine_labels(prior, working, torch.full_like(image, 0.5), output, edge=True)
    interpolator = _Interpolator(prior, working, output, keep=2)
    background = interpolator.at(torch.arange(truth.numel()))[0].reshape(truth.shape)
    assert torch.allclose(flat.background, background.clamp(0, 1), atol=1e-3)


def test_a_network_with_edge_refinement_moves_its_brain_edge_on_fine_scans_only():
    torch.set_num_threads(1)
    config = dataclasses.replace(tiny_config(), intensity_refinement=True)
    plain = VisionNetwork(config).eval()
    edged = VisionNetwork(dataclasses.replace(config, edge_refinement=True)).eval()
    scan = scan_on(shape=(20, 18, 16), spacing=1.0, seed=2)
    coarse_scan = scan_on(shape=(10, 9, 8), spacing=2.0, seed=2)
    with torch.no_grad():
        brain = edged.select(edged.encode([scan]), 'whole brain')[0]
        assert not torch.equal(brain, plain.select(plain.encode([scan]), 'whole brain')[0])
        assert torch.equal(edged.select(edged.encode([coarse_scan]), 'whole brain')[0],
                           plain.select(plain.encode([coarse_scan]), 'whole brain')[0])


def test_a_coarse_scan_is_refined_on_a_finer_grid_and_answered_on_its_own():
    """With ``refinement_spacing_mm`` a 2 mm scan (no axis finer than the working grid) is
    refined on a 1 mm grid interpolated from it, and its masks land on its own 2 mm grid;
    without the key, or in training mode, nothing is interpolated."""
    torch.set_num_threads(1)
    config = dataclasses.replace(tiny_config(), intensity_refinement=True)
    plain = VisionNetwork(config).eval()
    finer = VisionNetwork(dataclasses.replace(config, refinement_spacing_mm=1.0)).eval()
    coarse_scan = scan_on(shape=(10, 9, 8), spacing=2.0, seed=2)
    with torch.no_grad():
        encoding = finer.encode([coarse_scan])
        prepared = encoding.prepared[0]
        assert prepared.refined_upsampled and prepared.refinable
        spacing = prepared.fine_volume.geometry.spacing.tolist()
        assert all(abs(s - 1.0) < 1e-5 for s in spacing)
        fine = finer.select(encoding, 'left hippocampus')[0]
        assert tuple(fine.shape[1:]) == tuple(prepared.fine_volume.baseshape)
        assert encoding.refined is not None and encoding.refined[0] is not None
        mask = finer.segment(encoding, 'left hippocampus')
        assert tuple(mask.volume.baseshape) == (10, 9, 8)
        assert torch.allclose(mask.volume.geometry.tensor, coarse_scan.volume.geometry.tensor)
        # a lesion target (no refined labels) lands on the scan's grid as well
        glioma = finer.segment(finer.encode([coarse_scan]), 'glioma')
        assert tuple(glioma.volume.baseshape) == (10, 9, 8)
        # off: the plain softmax on the working grid, as before
        assert plain.encode([coarse_scan]).prepared[0].fine_volume is None
        # a 1 mm scan keeps its own grid either way
        scan = scan_on(shape=(20, 18, 16), spacing=1.0, seed=2)
        assert not finer.encode([scan]).prepared[0].refined_upsampled
    finer.train()
    assert finer.encode([coarse_scan]).prepared[0].fine_volume is None


def test_refining_a_coarse_scan_finer_places_its_edges_between_its_voxels():
    """A 2 mm image of an edge behind a blurred prior 2.5 mm off: refined on the image
    interpolated to 1 mm and averaged back onto the 2 mm grid, the label's share is closer
    to the edge's true partial volume than the prior, and its mask is wrong on fewer voxels."""
    prior, working, image, output, truth = _two_labels(edge=13.0, shift_mm=2.5)
    coarse = vx.Volume(image[None], output).resample_like(working, antialias=True)
    interpolated = coarse.resample_like(output, mode='linear').tensor[0]
    refined = refine_labels(prior, working, interpolated, output)
    back = vx.Volume(refined.total([1]), output).resample_like(
        working, mode='linear', antialias=True).tensor[0]
    share = vx.Volume(truth[None].float(), output).resample_like(
        working, antialias=True).tensor[0]
    inside = (slice(2, -2),) * 3  # away from the phantom's faces

    def errors(estimate):
        return (float((estimate - share)[inside].abs().mean()),
                int(((estimate > 0.5) != (share > 0.5))[inside].sum()))

    (prior_error, prior_wrong), (refined_error, refined_wrong) = errors(prior[1]), errors(back)
    assert refined_error < 0.7 * prior_error
    assert refined_wrong < prior_wrong


@pytest.mark.parametrize('refinement_spacing_mm', [0.0, 1.0])
def test_a_refined_session_merges_fine_and_coarse_scans(refinement_spacing_mm):
    """A session of a 1 mm and a 2 mm scan (one mask on the first scan's grid), with and
    without a refinement grid for the coarse one."""
    torch.set_num_threads(1)
    config = dataclasses.replace(tiny_config(), intensity_refinement=True,
                                 refinement_spacing_mm=refinement_spacing_mm)
    network = VisionNetwork(config).eval()
    fine = scan_on(shape=(20, 18, 16), spacing=1.0, seed=2)
    coarse = dataclasses.replace(scan_on(shape=(10, 9, 8), spacing=2.0, seed=3), name='img1')
    with torch.no_grad():
        for scans, shape in (([fine, coarse], (20, 18, 16)), ([coarse, fine], (10, 9, 8))):
            encoding = network.encode(scans)
            assert len(encoding.sessions) == 1
            mask = network.segment(encoding, 'left hippocampus')
            assert tuple(mask.volume.baseshape) == shape


def test_a_thick_slice_scan_is_segmented_on_the_isotropic_working_grid():
    """With ``isotropic_working_grid`` a 5 x 2 x 2 mm scan reaches the network on a 2 mm
    grid on every axis (the grid the dense stage trains on), is not refined (nothing finer
    than 2 mm to recover) and gets its masks on its own grid; without the key, or in
    training mode, the thick axis is kept; a 1 mm scan is coarsened to 2 mm either way."""
    torch.set_num_threads(1)
    config = dataclasses.replace(tiny_config(), intensity_refinement=True)
    kept = VisionNetwork(config).eval()
    isotropic = VisionNetwork(dataclasses.replace(config, isotropic_working_grid=True)).eval()
    geometry = make_geometry((6, 12, 10), (5.0, 2.0, 2.0), 'RAS')
    values = torch.rand((1, 6, 12, 10), generator=torch.Generator().manual_seed(4)) * 100 + 10
    thick = dataclasses.replace(scan_on(), volume=vx.Volume(values, geometry))
    with torch.no_grad():
        encoding = isotropic.encode([thick])
        prepared = encoding.prepared[0]
        spacing = prepared.volume.geometry.spacing.tolist()
        assert all(abs(s - 2.0) < 1e-5 for s in spacing)
        assert prepared.fine_volume is not None and not prepared.refinable
        assert tuple(prepared.fine_volume.baseshape) == (6, 12, 10)
        mask = isotropic.segment(encoding, 'left hippocampus')
        assert tuple(mask.volume.baseshape) == (6, 12, 10)
        assert encoding.refined is None  # the working grid's probabilities, resampled
        glioma = isotropic.segment(encoding, 'glioma')
        assert tuple(glioma.volume.baseshape) == (6, 12, 10)
        assert prepared.restore(prepared.volume.tensor).tensor.shape[1:] == (6, 12, 10)
        # in a session with a 1 mm scan, only the 1 mm scan is refined
        fine_scan = scan_on(shape=(20, 18, 16), spacing=1.0, seed=2)
        session = isotropic.encode([fine_scan, thick])
        isotropic.segment(session, 'left hippocampus')
        assert session.refined[0] is not None and session.refined[1] is None
        plain = kept.encode([thick]).prepared[0]
        assert plain.fine_volume is None
        assert abs(float(plain.volume.geometry.spacing[0]) - 5.0) < 1e-5
        assert torch.equal(isotropic.encode([fine_scan]).prepared[0].volume.tensor,
                           kept.encode([fine_scan]).prepared[0].volume.tensor)
    isotropic.train()
    assert isotropic.encode([thick]).prepared[0].fine_volume is None
