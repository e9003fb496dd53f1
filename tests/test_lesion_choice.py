"""Which predicted lesions a lesion description names (:mod:`vpcli.library.lesion_choice`).

The grouping of a mask into lesions is checked on drawn arrays; the choice itself against
the task world: given every lesion of the description's class (what a network's class
channel marks), it must keep exactly the lesions the description's ground truth holds,
measured with the oracle's regions and the same library functions.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import voxel as vx

from vpcli.library.lesion_choice import lesion_chooser, lesion_components


def test_fragments_the_network_half_believes_joined_are_one_lesion():
    shape = (40, 30, 20)
    probability = np.zeros(shape, np.float32)
    probability[5:10, 10:15, 5:10] = 0.9      # fragment
    probability[10:13, 10:15, 5:10] = 0.3     # a bridge the network half believes in
    probability[13:18, 10:15, 5:10] = 0.8     # fragment: the same lesion
    probability[19:22, 10:15, 5:10] = 0.1     # a bridge it does not
    probability[22:26, 10:15, 5:10] = 0.7     # another lesion
    labels, count = lesion_components(probability)
    assert count == 2
    assert np.array_equal(labels > 0, probability > 0.5)
    assert len(np.unique(labels[5:18, 10:15, 5:10][probability[5:18, 10:15, 5:10] > 0.5])) == 1
    assert labels[23, 12, 7] != labels[6, 12, 7]
    assert lesion_components(np.zeros(shape, np.float32))[1] == 0


def test_other_targets_get_no_chooser():
    assert lesion_chooser(None, None, 'left hippocampus') is None
    assert lesion_chooser(None, None, 'glioma') is None        # a class alone: every one
    assert lesion_chooser(None, None, 'no such thing') is None
    assert lesion_chooser(None, None, 'left frontal glioma') is not None


@pytest.mark.slow
@pytest.mark.parametrize('index', [8, 19])
def test_the_class_mask_narrows_to_the_described_lesions(index):
    """Lesions-suite cases with several lesions of the described class: given them all,
    the chooser keeps the one(s) the description's ground truth holds, no more."""
    from vpcli.evaluate.tasks import _draw_task
    from vpcli.tasks.ontology import AnatomyTarget, LesionQuery, lesion_canonical, parse_target
    from vpcli.tasks.oracle import OracleVision
    from vpcli.tasks.roi import matching_lesions

    draft, world = _draw_task('lesions', 0, index, 'segmentation',
                              lambda d, w: not isinstance(parse_target(d.segments[0][1]),
                                                          AnatomyTarget),
                              lambda plan: bool(plan.params.get('lesion')))
    target = draft.segments[0][1]
    query = parse_target(target)
    every = world.mask(lesion_canonical(query.class_key, {}, every=True), 0)
    assert len(matching_lesions(LesionQuery(query.class_key), world.lesions())) > \
        len(matching_lesions(query, world.lesions())) >= 1
    network = OracleVision(world)
    encoding = network.encode(list(world.case.scans))
    choose = lesion_chooser(network, encoding, target)
    probability = vx.Volume(every.volume.tensor.float(), every.volume.geometry)
    keep, unmatched = choose(0, probability)
    truth = world.mask(target, 0).volume.tensor[0].numpy()
    assert unmatched == []
    assert np.array_equal(keep & every.volume.tensor[0].numpy(), truth)
    assert torch.from_numpy(truth).any()


def test_segment_keeps_what_the_chooser_keeps_and_warns_of_what_it_misses():
    """The plumbing: ``VisionNetwork.segment`` zeroes what ``choose`` drops before the
    threshold and QC, and the QC block turns unmatched descriptors into a warning."""
    from test_dense_vision import scan_on, tiny_config
    from vpcli.quality import assess
    from vpcli.vision.model import VisionNetwork

    torch.manual_seed(0)
    network = VisionNetwork(tiny_config()).eval()
    scan = scan_on()
    seen = []

    def choose(session, probability):
        keep = np.zeros(probability.tensor.shape[1:], bool)
        keep[: keep.shape[0] // 2] = True
        seen.append(session)
        return keep, ['left']

    with torch.no_grad():
        encoding = network.encode([scan])
        whole = network.segment(encoding, 'whole brain')
        half = network.segment(encoding, 'whole brain', choose=choose)
    assert seen == [0]
    full = whole.volume.tensor[0].bool()
    kept = half.volume.tensor[0].bool()
    assert full[: full.shape[0] // 2].any()
    assert torch.equal(kept[: kept.shape[0] // 2], full[: full.shape[0] // 2])
    assert not kept[kept.shape[0] // 2:].any()
    assert half.quality['unmatched_descriptors'] == ['left']
    assert half.quality['voxels'] == int(kept.sum())
    flags = assess('left frontal glioma', 3.0, half.quality)['flags']
    assert any(flag.startswith('no lesion found matches: left') for flag in flags)
    assert 'unmatched_descriptors' not in whole.quality
