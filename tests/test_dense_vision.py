"""The dense vision network: batched training path, loss, synthesis, selector, segment."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import voxel as vx

from conftest import make_geometry
from dense_helpers import LABELS, LESIONS, one_hot_logits, random_case, tiny_config
from vpcli.errors import ProgramError
from vpcli.vision.config import RUN_TIME_KEYS, VisionConfig, named_config
from vpcli.vision.dense_training import composite_matrix, dense_loss
from vpcli.vision.model import VisionNetwork
from vpcli.vision.targets import parts_of, target_key
from vpcli.volumes import Scan, SourceRef

@pytest.fixture(scope='module')
def network() -> VisionNetwork:
    torch.set_num_threads(1)
    return VisionNetwork(tiny_config()).eval()


def shipped_weights_copy(tmp_path):
    """A writable copy of the shipped weights folder (without training states)."""
    import shutil
    from pathlib import Path
    repository = Path(__file__).resolve().parent.parent
    weights = tmp_path / 'weights'
    weights.mkdir()
    for name in ('agent.pt', 'vision.pt', 'tokenizer.model', 'manifest.json'):
        shutil.copy(repository / 'weights' / name, weights / name)
    return weights


def scan_on(shape=(16, 16, 16), spacing=2.0, seed=0) -> Scan:
    geometry = make_geometry(shape, (spacing,) * 3, 'RAS')
    generator = torch.Generator().manual_seed(seed)
    volume = vx.Volume(torch.rand((1, *shape), generator=generator) * 100 + 10, geometry)
    return Scan(volume=volume, name='img0', sources=(SourceRef('img0', 'img0.nii.gz'),))


@pytest.mark.parametrize('lesion_head_width', [0, 4])
def test_batched_training_path_equals_the_native_path(network, lesion_head_width):
    if lesion_head_width:  # the lesion channels from their own head, at both
        network = VisionNetwork(tiny_config(lesion_head_width=lesion_head_width)).eval()
    scan = scan_on()
    with torch.no_grad():
        encoding = network.encode([scan])
        native = network.dense_probabilities(encoding)[0]
        prepared = encoding.prepared[0].volume.tensor
        logits = network.dense_logits(prepared[None])[0]
    anatomy = 1 + len(LABELS)
    batched = torch.cat([logits[:anatomy].softmax(0), torch.sigmoid(logits[anatomy:])])
    assert batched.shape == native.shape
    assert torch.allclose(batched, native, atol=1e-5)


def test_a_batch_is_the_same_as_its_samples_alone(network):
    images = torch.rand(3, 1, 8, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        together = network.dense_logits(images)
        alone = torch.cat([network.dense_logits(images[i:i + 1]) for i in range(3)])
    assert torch.allclose(together, alone, atol=1e-5)


@pytest.mark.parametrize('lesion_head_width', [0, 4])
def test_the_split_training_logits_are_the_full_logits_sliced(lesion_head_width):
    torch.set_num_threads(1)
    network = VisionNetwork(tiny_config(lesion_head_width=lesion_head_width)).eval()
    images = torch.rand(2, 1, 8, 8, 8, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        full = network.dense_logits(images)
        anatomy, lesions = network.dense_logits_split(images)
    classes = 1 + len(LABELS)
    assert anatomy.shape == full[:, :classes].shape and lesions.shape == full[:, classes:].shape
    assert torch.allclose(anatomy, full[:, :classes], atol=1e-5)
    assert torch.allclose(lesions, full[:, classes:], atol=1e-5)
    # the loss takes either form, and its gradient reaches the weights the same way
    composites = composite_matrix(tiny_config())
    labels = torch.randint(classes, (2, 8, 8, 8), generator=torch.Generator().manual_seed(4))
    truth = torch.zeros(2, len(LESIONS), 8, 8, 8)
    truth[:, 0, 2:5, 2:5, 2:5] = 1
    grads = []
    for split in (False, True):
        network.zero_grad()
        logits = network.dense_logits_split(images) if split else network.dense_logits(images)
        loss, _ = dense_loss(logits, labels, truth, composites)
        loss.backward()
        grads.append(network.head.weight.grad.clone())
    assert torch.allclose(grads[0], grads[1], atol=1e-5)


def test_the_split_logits_stay_fp32_under_bf16_autocast(network):
    images = torch.rand(1, 1, 8, 8, 8, generator=torch.Generator().manual_seed(5))
    with torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16):
        anatomy, lesions = network.dense_logits_split(images)
    assert anatomy.dtype == torch.float32 and lesions.dtype == torch.float32
    with torch.no_grad():
        exact, _ = network.dense_logits_split(images)
    # bf16 convolutions: close to fp32, not equal
    assert (anatomy - exact).abs().max() < 0.1


def test_bf16_autocast_is_used_only_where_it_is_fast(monkeypatch):
    from vpcli.errors import BadInputError
    from vpcli.vision.dense_training import DenseRecipe, bf16_autocast_helps
    monkeypatch.setattr(torch.cpu, '_is_amx_tile_supported', lambda: False)
    assert not bf16_autocast_helps('cpu')
    monkeypatch.setattr(torch.cpu, '_is_amx_tile_supported', lambda: True)
    assert bf16_autocast_helps('cpu')
    assert bf16_autocast_helps('cuda:0')
    with pytest.raises(BadInputError, match='precision'):
        DenseRecipe(name='t', precision='fp16')


def test_a_checkpoint_from_before_precision_resumes_as_a_recorded_change(tmp_path):
    from vpcli.vision.dense_training import DenseRecipe, DenseTrainer
    torch.set_num_threads(1)
    recipe = DenseRecipe(name='t', vision_config='dense-tiny', batch_size=1, shape=[16, 16, 16])
    path = DenseTrainer(recipe, VisionNetwork(tiny_config())).save(tmp_path / 'c.pt', compact=True)
    data = torch.load(path, weights_only=True)
    del data['recipe']['precision']  # as written before the key existed (fp32 training)
    torch.save(data, path)
    resumed = DenseTrainer.resume(path, recipe=recipe)
    assert resumed.recipe_changes[-1]['changed'] == {'precision': ['fp32', 'auto']}
    same = DenseTrainer.resume(path, recipe=dataclasses.replace(recipe, precision='fp32'))
    assert not same.recipe_changes


def test_targets_are_made_of_their_parts():
    names = [name for _, name in LABELS]
    white = parts_of('bilateral cerebral white matter', names, LESIONS)
    assert white.labels == (1, 2) and not white.lesions
    lobe = parts_of('left frontal lobe', names, LESIONS)
    assert lobe.labels == (5,) and lobe.white_matter_sides == ('Left',)
    neoplasm = parts_of('neoplasm', names, LESIONS)
    assert neoplasm.lesions == (0,)  # glioma is a neoplasm, an infarct is not
    assert parts_of('lesion', names, LESIONS).lesions == (0, 1)
    assert target_key('largest left frontal glioma') == 'glioma'
    assert target_key('left hippocampus') == 'left hippocampus'
    assert target_key(' Left  Hippocampus ') == 'left hippocampus'
    assert target_key('Extraventricular csf') == 'extraventricular CSF'
    with pytest.raises(ProgramError, match='unknown target "left elbow"'):
        target_key('left elbow')


def test_segment_returns_the_named_target_whatever_phi(network):
    scan = scan_on()
    with torch.no_grad():
        encoding = network.encode([scan])
        left = network.segment(encoding, 'left hippocampus')
        both = network.segment(encoding, 'bilateral hippocampus')
        with_phi = network.segment(encoding, 'bilateral hippocampus', phi=torch.randn(32))
        probabilities = network.dense_probabilities(encoding)[0]
    expected = encoding.prepared[0].restore(probabilities[[3, 4]].sum(0, keepdim=True)).tensor > 0.5
    assert torch.equal(both.volume.tensor.bool(), expected.cpu())
    assert torch.equal(with_phi.volume.tensor, both.volume.tensor)
    assert int(left.volume.tensor.sum()) <= int(both.volume.tensor.sum())
    with pytest.raises(ProgramError, match='unknown target'):
        network.segment(encoding, 'left elbow')


@pytest.fixture(scope='module')
def composites() -> torch.Tensor:
    return composite_matrix(tiny_config())


def test_dense_loss_rewards_the_right_labels_and_unions(composites):
    classes = 1 + len(LABELS)
    generator = torch.Generator().manual_seed(2)
    labels = torch.randint(classes, (2, 6, 6, 6), generator=generator)
    lesions = (torch.rand(2, len(LESIONS), 6, 6, 6, generator=generator) > 0.8).float()
    _, right = dense_loss(one_hot_logits(labels, classes, lesions), labels, lesions, composites)
    wrong_labels = (labels + 1) % classes
    _, wrong = dense_loss(one_hot_logits(wrong_labels, classes, 1 - lesions), labels, lesions,
                          composites)
    assert right['dice'] > 0.99 and right['composite_dice'] > 0.99 and right['lesion_dice'] > 0.99
    assert wrong['dice'] < 0.1 and wrong['lesion_dice'] < 0.1
    assert right['ce'] < wrong['ce']


def test_composite_dice_equals_the_dice_of_the_union(composites):
    classes, labels, logits, lesions = random_case(3)
    _, parts = dense_loss(logits, labels, lesions, composites)
    probabilities = logits[:, :classes].softmax(1)
    dices = []
    for column in composites.T:
        members = column.nonzero().flatten()
        union_p = probabilities[:, members].sum(1)
        union_t = torch.isin(labels, members).float()
        if union_t.sum() > 0:
            dices.append(float((2 * (union_p * union_t).sum() + 1) / (union_p.sum() + union_t.sum() + 1)))
    assert parts['composite_dice'] == pytest.approx(np.mean(dices), abs=1e-5)


@pytest.mark.slow
def test_synthesis_makes_reproducible_batches_on_the_training_grid():
    pytest.importorskip('smriprep_freesurfer732')
    from vpcli.synth.dense import DenseSynthesizer, SynthesisSettings
    from vpcli.synth.vocabulary import load_vocabulary
    ids = load_vocabulary().ids
    settings = SynthesisSettings(shape=(16, 16, 16), lesion_probability=1.0)
    first = DenseSynthesizer(ids, LESIONS, 'cpu', settings, seed=4).sample(2)
    again = DenseSynthesizer(ids, LESIONS, 'cpu', settings, seed=4).sample(2)
    assert first.image.shape == (2, 1, 16, 16, 16) and first.labels.shape == (2, 16, 16, 16)
    assert first.lesions.shape == (2, len(LESIONS), 16, 16, 16)
    assert torch.equal(first.image, again.image) and torch.equal(first.labels, again.labels)
    assert float(first.image.min()) >= 0 and float(first.image.max()) <= 1
    assert int(first.labels.max()) <= len(ids) and bool((first.labels > 0).any())


def tiny_recipe(steps: int):
    """A dense-tiny recipe of ``steps`` steps on 16³ samples, checkpointing every 2."""
    pytest.importorskip('smriprep_freesurfer732')
    from vpcli.vision.dense_training import DenseRecipe
    torch.set_num_threads(1)
    return DenseRecipe(name='t', vision_config='dense-tiny', steps=steps, batch_size=1,
                       shape=[16, 16, 16], warmup_steps=1, checkpoint_every=2, log_every=2)


@pytest.mark.slow
@pytest.mark.training
def test_a_resumed_dense_run_equals_one_run(tmp_path):
    from vpcli.vision.dense_training import DenseTrainer
    recipe = tiny_recipe(steps=4)
    straight = DenseTrainer.create(recipe)
    straight.train(3, log=lambda line: None)
    split = DenseTrainer.create(recipe)
    split.train(2, tmp_path / 'checkpoint.pt', log=lambda line: None)
    resumed = DenseTrainer.resume(tmp_path / 'checkpoint.pt', recipe=recipe)
    resumed.train(3, log=lambda line: None)
    for (name, a), (_, b) in zip(straight.network.state_dict().items(),
                                 resumed.network.state_dict().items()):
        assert torch.equal(a, b), name
    assert straight.history[-1]['loss'] == resumed.history[-1]['loss']
    assert resumed.recipe_changes == []
    longer = DenseTrainer.resume(tmp_path / 'checkpoint.pt', recipe=dataclasses.replace(recipe, steps=9))
    assert longer.recipe_changes == [{'step': 2, 'changed': {'steps': [4, 9]}}]


@pytest.mark.training
def test_train_command_refuses_to_train_before_the_recipes_schedule_start(tmp_path):
    """A recipe whose warm-up starts after the run's step would train every step before it
    at the warm-up's first rate: the command says so, names the recipe, and trains nothing."""
    pytest.importorskip('smriprep_freesurfer732')
    from typer.testing import CliRunner

    from vpcli.cli import app

    text = (Path(__file__).parents[1] / 'recipes' / 'train' / 'dense-tiny.toml').read_text()
    recipe = tmp_path / 'late.toml'
    recipe.write_text(text.replace('steps = 20', 'steps = 20\nschedule_start = 2'))
    runner = CliRunner()
    run = tmp_path / 'run'
    refused = runner.invoke(app, ['train', '--recipe', str(recipe), '-o', str(run), '--until', '1'])
    assert refused.exit_code != 0
    assert str(recipe) in refused.output and 'schedule_start 2' in refused.output
    assert 'schedule_start = 0' in refused.output and not (run / 'checkpoint.pt').exists()
    from vpcli.errors import BadInputError
    from vpcli.vision.dense_training import DenseRecipe, DenseTrainer
    direct = DenseTrainer.create(DenseRecipe.load(recipe))  # the Python API refuses too
    with pytest.raises(BadInputError, match='schedule_start 2'):
        direct.train(1, log=lambda line: None)
    assert direct.step == 0
    on_time = tmp_path / 'on-time.toml'
    on_time.write_text(text.replace('steps = 20', 'steps = 20\nschedule_start = 0'))
    first = runner.invoke(app, ['train', '--recipe', str(on_time), '-o', str(run), '--until', '2'])
    assert first.exit_code == 0, first.output
    again = runner.invoke(app, ['train', '--recipe', str(recipe), '-o', str(run), '--until', '3'])
    assert again.exit_code == 0 and 'step 3' in again.output  # the run is at schedule_start


@pytest.mark.slow
@pytest.mark.training
def test_train_command_runs_exports_and_continues_a_dense_stage(tmp_path, monkeypatch):
    pytest.importorskip('smriprep_freesurfer732')

    from typer.testing import CliRunner

    from vpcli.cli import app
    from vpcli.weights import load_bundle, read_manifest

    weights = shipped_weights_copy(tmp_path)
    runner = CliRunner()
    run = tmp_path / 'run'
    refused = runner.invoke(app, ['train', '--recipe', 'dense-tiny', '--stage', 'joint', '-o', str(run)])
    assert refused.exit_code != 0 and 'not a joint recipe' in refused.output
    first = runner.invoke(app, ['train', '--recipe', 'dense-tiny', '-o', str(run), '--until', '2',
                                '--quiet', '--export', str(weights)])
    assert first.exit_code == 0, first.output
    second = runner.invoke(app, ['train', '--recipe', 'dense-tiny', '-o', str(run), '--until', '3'])
    assert second.exit_code == 0 and 'resumed' in second.output and 'step 3' in second.output
    manifest = read_manifest(weights)
    assert manifest['vision_training']['steps'] == 2 and manifest['vision_config']['label_ids']
    state = weights / 'train-state' / 'dense-tiny-checkpoint.pt'
    saved = torch.load(state, weights_only=True)
    assert 'optimizer' not in saved and all(v.dtype == torch.float16 for v in saved['state'].values()
                                            if v.is_floating_point())
    bundle = load_bundle(weights)  # checksums verified; the network loads strictly
    assert bundle.vision.config.dense and bundle.vision.config.label_names
    # run-time settings come from the recipe's named config at export, not from the run's
    # checkpoint (which carries them as they were when the run began)
    from vpcli.vision import config as vision_config
    assert not manifest['vision_config']['intensity_refinement']
    monkeypatch.setitem(vision_config.CONFIGS, 'dense-tiny', dataclasses.replace(
        vision_config.CONFIGS['dense-tiny'], intensity_refinement=True))
    third = runner.invoke(app, ['train', '--recipe', 'dense-tiny', '-o', str(run), '--until', '3',
                                '--quiet', '--export', str(weights)])
    assert third.exit_code == 0, third.output
    assert read_manifest(weights)['vision_config']['intensity_refinement'] is True
    assert load_bundle(weights).vision.config.intensity_refinement


def test_flip_averaging_is_symmetric_under_a_mirrored_scan():
    """With flip averaging, a mirrored scan gives the mirrored probabilities, left and right
    labels swapped (the average of a scan and its mirror is mirror-symmetric)."""
    network = VisionNetwork(tiny_config(flip_averaging=True)).eval()
    scan = scan_on(seed=3)
    mirrored = Scan(volume=scan.volume.new(scan.volume.tensor.flip(1)), name='img0',
                    sources=scan.sources)
    with torch.no_grad():
        first = network.dense_probabilities(network.encode([scan]))[0]
        second = network.dense_probabilities(network.encode([mirrored]))[0]
    swap = network._mirror_channels()
    assert swap[1] == 2 and swap[3] == 4 and swap[5] == 6 and swap[7] == 7  # lesions stay
    assert torch.allclose(second, first.flip(1)[swap], atol=1e-5)


def test_a_lobe_adds_the_white_matter_nearest_to_its_parcels(network):
    """Lobes hold their parcels plus the same side's cerebral white matter whose nearest
    predicted cortical voxel is one of those parcels: with left frontal cortex in the first
    two x-slices and right frontal cortex in the last two, that is the left half."""
    scan = scan_on(seed=7)
    with torch.no_grad():
        encoding = network.encode([scan])
        shape = encoding.prepared[0].volume.tensor.shape[1:]
        winners = torch.ones(shape, dtype=torch.long)  # left cerebral white matter
        winners[:2], winners[-2:] = 5, 6  # ctx-lh- and ctx-rh-superiorfrontal
        probabilities = torch.zeros(1 + len(LABELS) + len(LESIONS), *shape)
        probabilities.scatter_(0, winners[None], 0.9)
        probabilities[0] += 0.1
        encoding.dense = [probabilities]  # what a trained network might predict
        lobe = network.select(encoding, 'left frontal lobe')[0][0]
    x = torch.arange(shape[0]).view(-1, 1, 1).expand(shape)
    expected = torch.where(x < 2, 0.9, torch.where(x < (shape[0] - 1) / 2, 0.9, 0.0))
    assert torch.allclose(lobe, expected)
    assert set(encoding.nearest_parcels) == {0}


@pytest.mark.slow
@pytest.mark.training
def test_averaged_checkpoints_export_their_mean_and_record_it(tmp_path):
    """scripts/average_checkpoints.py: the weights are the mean of the checkpoints', the steps
    averaged are recorded (and cleared once training moves the weights on)."""
    pytest.importorskip('smriprep_freesurfer732')
    import runpy
    import sys
    from pathlib import Path

    from vpcli.vision.dense_training import DenseRecipe, DenseTrainer
    torch.set_num_threads(1)
    recipe = DenseRecipe(name='t', vision_config='dense-tiny', steps=4, batch_size=1,
                         shape=[16, 16, 16], warmup_steps=1, checkpoint_every=1, log_every=1)
    trainer = DenseTrainer.create(recipe)
    trainer.train(1, tmp_path / 'a.pt', log=lambda line: None)
    trainer.train(2, tmp_path / 'b.pt', log=lambda line: None)
    script = Path(__file__).resolve().parent.parent / 'scripts' / 'average_checkpoints.py'
    argv = sys.argv
    sys.argv = [str(script), str(tmp_path / 'mean.pt'), str(tmp_path / 'a.pt'), str(tmp_path / 'b.pt')]
    try:
        runpy.run_path(str(script), run_name='__main__')
    finally:
        sys.argv = argv
    a, b = (torch.load(tmp_path / name, weights_only=True) for name in ('a.pt', 'b.pt'))
    mean = DenseTrainer.resume(tmp_path / 'mean.pt')
    assert mean.step == 2 and mean.averaged_steps == [1, 2]
    for name, value in mean.network.state_dict().items():
        if value.is_floating_point():
            assert torch.allclose(value, (a['state'][name] + b['state'][name]) / 2, atol=1e-6), name
    # an average counts as the checkpoints behind it: (mean of a, b) with c is the mean of all three
    trainer.train(3, tmp_path / 'c.pt', log=lambda line: None)
    c = torch.load(tmp_path / 'c.pt', weights_only=True)
    sys.argv = [str(script), str(tmp_path / 'mean3.pt'), str(tmp_path / 'mean.pt'), str(tmp_path / 'c.pt')]
    try:
        runpy.run_path(str(script), run_name='__main__')
    finally:
        sys.argv = argv
    three = DenseTrainer.resume(tmp_path / 'mean3.pt')
    assert three.step == 3 and three.averaged_steps == [1, 2, 3]
    moved = 0
    for name, value in three.network.state_dict().items():
        if value.is_floating_point():
            expected = (a['state'][name] + b['state'][name] + c['state'][name]) / 3
            assert torch.allclose(value, expected, atol=1e-6), name
            moved += int(not torch.allclose(value, (mean.network.state_dict()[name] + c['state'][name]) / 2))
    assert moved  # weighted by count, not the plain mean of the two files
    mean.train(3, log=lambda line: None)
    assert mean.averaged_steps == []


def test_partition_dice_weight_scales_only_the_partition_dice(composites):
    _, labels, logits, lesions = random_case(4)
    full, parts = dense_loss(logits, labels, lesions, composites)
    without, _ = dense_loss(logits, labels, lesions, composites, partition_dice_weight=0.0)
    assert float(full - without) == pytest.approx(1 - parts['dice'], abs=1e-5)


def test_logit_offsets_are_checked_saved_and_applied_at_run_time_only(tmp_path):
    anatomy = 1 + len(LABELS)
    with pytest.raises(ValueError, match='logit offsets'):
        tiny_config(logit_offsets=(0.0, 1.0))
    offsets = (0.0, 0.0, 0.0, 40.0, 0.0, 0.0, 0.0)  # left hippocampus wins among the labels
    network = VisionNetwork(tiny_config(logit_offsets=offsets)).eval()
    network.load_state_dict(VisionNetwork(tiny_config()).state_dict())
    plain = VisionNetwork(tiny_config()).eval()
    path = network.save(tmp_path / 'vision.pt')
    assert VisionNetwork.load(path).config.logit_offsets == offsets
    scan = scan_on(seed=4)
    with torch.no_grad():
        shifted = network.dense_probabilities(network.encode([scan]))[0]
        unshifted = plain.dense_probabilities(plain.encode([scan]))[0]
        training = network.dense_logits(network.encode([scan]).prepared[0].volume.tensor[None])[0]
        untouched = plain.dense_logits(plain.encode([scan]).prepared[0].volume.tensor[None])[0]
    assert shifted.shape[0] == anatomy + len(LESIONS)
    brain = 1 - unshifted[0]
    assert torch.allclose(shifted[0], unshifted[0])  # the brain's outer edge never moves
    assert torch.allclose(shifted[3], brain, atol=1e-5) and not torch.allclose(unshifted[3], brain)
    assert torch.allclose(shifted[1:anatomy].sum(0), brain, atol=1e-5)
    assert torch.allclose(shifted[anatomy:], unshifted[anatomy:])  # lesion channels untouched
    assert torch.equal(training, untouched)  # training logits never see the offsets


def test_the_in_place_calibrated_softmax_is_the_two_softmax_definition():
    """``calibrated_softmax`` (written into ``out``, background from a log-sum-exp) equals
    its definition: the plain softmax's background, the labels' softmax of offset logits
    sharing the rest; with no offsets, the plain softmax. Extreme logits stay finite."""
    from vpcli.vision.model import calibrated_softmax
    generator = torch.Generator().manual_seed(3)
    logits = 6.0 * torch.randn((9, 7, 8, 5), generator=generator)
    logits[0, 0] += 80.0    # background certain
    logits[4, 1] += 80.0    # one label certain
    offsets = torch.randn(9, generator=generator)
    plain = logits.softmax(0)
    labels = (logits[1:] + offsets[1:].view(-1, 1, 1, 1)).softmax(0) * (1 - plain[:1])
    out = torch.full_like(logits, float('nan'))
    made = calibrated_softmax(logits, offsets, out=out)
    assert made.data_ptr() == out.data_ptr() and torch.isfinite(made).all()
    assert torch.allclose(made[0], plain[0], atol=1e-6)
    assert torch.allclose(made[1:], labels, atol=1e-6)
    assert torch.allclose(made.sum(0), torch.ones(7, 8, 5), atol=1e-5)
    assert torch.allclose(calibrated_softmax(logits, offsets), made, atol=1e-6)  # no out
    assert torch.equal(calibrated_softmax(logits, torch.zeros(9)), plain)


def test_fitted_offsets_match_volumes_and_share_one_offset_per_structure():
    """Logits that make channel 1 (and its mirror 2) too large and channel 3 too small:
    the fit brings thresholded volumes back to the true ones, one offset per side pair."""
    from vpcli.vision.calibration import fit_offsets, label_counts, volume_summary

    generator = torch.Generator().manual_seed(0)
    truths, logits = [], []
    for _ in range(4):
        truth = torch.randint(0, 4, (12, 12, 12), generator=generator)
        logit = 4.0 * torch.nn.functional.one_hot(truth, 4).permute(3, 0, 1, 2).float()
        logit = logit + torch.randn(logit.shape, generator=generator)
        logit[1] += 1.2
        logit[2] += 1.2
        logit[3] -= 1.0
        truths.append(truth)
        logits.append(logit)
    mirror = [0, 2, 1, 3]
    before = volume_summary(logits, truths, torch.zeros(4))
    offsets = fit_offsets(logits, truths, mirror)
    after = volume_summary(logits, truths, offsets)
    true, mask, _, _ = label_counts(logits, truths, offsets)
    assert float(offsets[1]) == float(offsets[2])
    assert float(offsets[0]) == 0 and float(offsets[1]) < -0.2 and float(offsets[3]) > 0.5
    assert torch.allclose(mask[1:], true[1:], rtol=0.05)
    assert after['median_abs_log_ratio'] < before['median_abs_log_ratio'] / 4
    assert after['mean_dice'] > before['mean_dice']


@pytest.mark.slow
@pytest.mark.training
def test_an_export_with_calibration_ships_and_records_the_offsets(tmp_path):
    pytest.importorskip('smriprep_freesurfer732')
    from pathlib import Path

    from vpcli.vision.dense_training import DenseRecipe, DenseTrainer, export_vision
    from vpcli.weights import load_bundle, read_manifest

    repository = Path(__file__).resolve().parent.parent
    weights = shipped_weights_copy(tmp_path)
    recipe = dataclasses.replace(DenseRecipe.load(repository / 'recipes/train/dense-tiny.toml'),
                                 calibration_samples=2)
    trainer = DenseTrainer.create(recipe)
    export_vision(trainer, weights, tmp_path / 'state.pt')
    record = read_manifest(weights)['vision_training']['volume_calibration']
    assert '2 synthetic samples' in record['fitted_on'] and 'fsaverage' in record['fitted_on']
    assert set(record['with']) == {'labels', 'median_volume_ratio', 'median_abs_log_ratio',
                                   'mean_dice'}
    network = load_bundle(weights).vision
    assert len(network.config.logit_offsets) == network.config.anatomy_channels
    assert any(value != 0 for value in network.config.logit_offsets)
    state = torch.load(tmp_path / 'state.pt', weights_only=True)
    assert not state['config'].get('logit_offsets')  # the training state stays uncalibrated


def test_the_calibration_leaves_tissues_and_cortical_parcels_alone():
    from vpcli.vision.calibration import calibrated_channels, fit_offsets

    names = ('Left-Cerebral-White-Matter', 'Left-Hippocampus', 'ctx-lh-superiorfrontal',
             'Right-Cerebellum-Cortex', 'Right-Pallidum')
    assert calibrated_channels(names).tolist() == [False, False, True, False, False, True]
    truth = torch.tensor([0, 1, 2, 3, 4, 5] * 40).view(6, 5, 8)
    logits = 4.0 * torch.nn.functional.one_hot(truth, 6).permute(3, 0, 1, 2).float()
    logits[1:] += 2.0  # every label too large against the background
    offsets = fit_offsets([logits], [truth], channels=calibrated_channels(names), limit=0.5)
    assert offsets[[0, 1, 3, 4]].tolist() == [0.0, 0.0, 0.0, 0.0]


@pytest.mark.slow
@pytest.mark.training
def test_volume_bias_samples_can_take_real_t1_intensities():
    """``template_probability`` changes the intensities of the calibration/bias samples,
    not their anatomy (the same draws), so the two can be compared label by label."""
    pytest.importorskip('smriprep_freesurfer732')
    from pathlib import Path

    from vpcli.vision.calibration import synthetic_logits
    from vpcli.vision.dense_training import DenseRecipe, DenseTrainer

    repository = Path(__file__).resolve().parent.parent
    recipe = DenseRecipe.load(repository / 'recipes/train/dense-tiny.toml')
    network = DenseTrainer.create(recipe).network.eval()
    real = synthetic_logits(network, 1, seed=3, shape=32, gca_draws=1, sources=('fsaverage',),
                            template_probability=1.0)
    random = synthetic_logits(network, 1, seed=3, shape=32, gca_draws=1, sources=('fsaverage',),
                              template_probability=0.0)
    assert torch.equal(real[1][0], random[1][0])
    assert not torch.equal(real[0][0], random[0][0])


def test_the_shipped_network_runs_with_its_recipes_run_time_settings():
    """The shipped ``vision.pt`` carries the run-time settings (flip averaging, intensity
    refinement) of the named config its recipe trains, as an export writes them: shipped
    weights re-saved by hand once lost flip averaging (example white matter 0.873 without
    it, 0.889 with it)."""
    from pathlib import Path

    from vpcli.vision.dense_training import DenseRecipe
    repository = Path(__file__).resolve().parent.parent
    manifest = json.loads((repository / 'weights' / 'manifest.json').read_text())
    recipe = DenseRecipe.load(repository / manifest['vision_training']['recipe_file'])
    named = named_config(recipe.vision_config)
    shipped = torch.load(repository / 'weights' / 'vision.pt', map_location='cpu',
                         weights_only=True)['config']
    defaults = VisionConfig()  # a key a network was saved without loads as its default
    for key in RUN_TIME_KEYS:
        assert shipped.get(key, getattr(defaults, key)) == getattr(named, key), key
        assert manifest['vision_config'].get(key, getattr(defaults, key)) == \
            getattr(named, key), key


def test_a_lesion_head_changes_the_lesion_channels_alone(network):
    torch.set_num_threads(1)
    headed = VisionNetwork(tiny_config(lesion_head_width=4)).eval()
    images = torch.rand(1, 1, 8, 8, 8, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        logits = headed.dense_logits(images)[0]
        untouched = network.dense_logits(images)[0]
    anatomy = 1 + len(LABELS)
    # the trunk and pointwise head are the plain network's (same seed); the lesion channels
    # are the lesion head's own
    assert torch.allclose(logits[:anatomy], untouched[:anatomy], atol=1e-6)
    assert not torch.allclose(logits[anatomy:], untouched[anatomy:], atol=1e-3)


def test_the_lesion_cross_entropy_weights_lesion_voxels_as_the_recipe_says(composites):
    labels = torch.zeros(1, 4, 4, 4, dtype=torch.long)
    lesions = torch.zeros(1, len(LESIONS), 4, 4, 4)
    lesions[0, 0, :2, :2, :2] = 1
    logits = torch.zeros(1, 1 + len(LABELS) + len(LESIONS), 4, 4, 4)
    _, plain = dense_loss(logits, labels, lesions, composites, positive_weight=0.0)
    _, weighted = dense_loss(logits, labels, lesions, composites, positive_weight=0.2)
    assert plain['lesion_bce'] == pytest.approx(float(np.log(2)), rel=1e-5)
    assert weighted['lesion_bce'] == pytest.approx(1.2 * float(np.log(2)), rel=1e-5)
    # lesion voxels weighted 5 in one mean: 8 of 128 voxels of the two channels
    _, voxels = dense_loss(logits, labels, lesions, composites, positive_weight=0.0, voxel_weight=5.0)
    assert voxels['lesion_bce'] == pytest.approx((8 * 5 + 120) / 128 * float(np.log(2)), rel=1e-5)


@pytest.mark.slow
@pytest.mark.training
def test_a_lesion_head_stage_trains_the_head_alone_from_a_run_without_one(tmp_path):
    from vpcli.errors import BadInputError
    from vpcli.vision.dense_training import DenseTrainer
    recipe = tiny_recipe(steps=2)
    first = DenseTrainer.create(recipe)
    first.train(2, tmp_path / 'checkpoint.pt', log=lambda line: None)
    with pytest.raises(BadInputError, match='lesion_head_width'):
        dataclasses.replace(recipe, train='lesion_head')
    heads = dataclasses.replace(recipe, name='heads', train='lesion_head', lesion_head_width=4,
                                schedule_start=2, steps=4, lesion_probability=1.0,
                                lesion_positive_weight=0.0)
    stage = DenseTrainer.resume(tmp_path / 'checkpoint.pt', recipe=heads)
    assert stage.network.lesion_head is not None and stage.network.config.lesion_head_width == 4
    changed = stage.recipe_changes[-1]
    assert changed['step'] == 2 and changed['changed']['train'] == ['all', 'lesion_head']
    before = {k: v.clone() for k, v in stage.network.state_dict().items()}
    assert stage.learning_rate() == pytest.approx(heads.learning_rate)  # its own warm-up
    stage.train(4, tmp_path / 'heads.pt', log=lambda line: None)
    after = stage.network.state_dict()
    moved = {k for k in before if not torch.equal(before[k], after[k])}
    assert moved and all(k.startswith('lesion_head.') for k in moved)
    again = DenseTrainer.resume(tmp_path / 'heads.pt', recipe=heads)  # exact resume, head kept
    assert all(torch.equal(again.network.state_dict()[k], after[k]) for k in after)


@pytest.mark.slow
def test_synthetic_lesions_follow_their_class_signal_and_tumours_bring_oedema():
    pytest.importorskip('smriprep_freesurfer732')
    from vpcli.synth.dense import MR_MODALITIES, DenseSynthesizer, SynthesisSettings
    from vpcli.synth.vocabulary import load_vocabulary
    torch.set_num_threads(1)
    ids = load_vocabulary().ids
    classes = ('glioma', 'edema')
    settings = SynthesisSettings(shape=(32, 32, 32), lesion_probability=1.0,
                                 random_contrast_probability=0.0, template_probability=0.0,
                                 skull_stripped_probability=0.0, thick_slice_probability=0.0,
                                 max_bias=0.0, max_noise=0.0, field_of_view_probability=0.0,
                                 deface_probability=0.0)
    synthesizer = DenseSynthesizer(ids, classes, 'cpu', settings, ('fsaverage',), seed=3)
    assert synthesizer.lesion_signals[0][MR_MODALITIES.index('T1w')] == ['hypo']  # iso left out
    assert synthesizer.lesion_signals[0][MR_MODALITIES.index('FLAIR')] == ['hyper']
    with_oedema = 0
    for _ in range(6):
        batch = synthesizer.sample(2)
        for b in range(2):
            glioma, oedema = batch.lesions[b, 0] > 0, batch.lesions[b, 1] > 0
            if bool(glioma.any()) and bool(oedema.any()):
                with_oedema += 1
    assert with_oedema >= 1


def test_a_lesion_head_export_keeps_the_calibration_of_the_same_trunk(tmp_path):
    from vpcli.vision.dense_training import _kept_calibration
    from vpcli.weights import half_state
    torch.set_num_threads(1)
    offsets = [0.0] + [0.1 * (i + 1) for i in range(len(LABELS))]
    shipped = VisionNetwork(tiny_config(logit_offsets=offsets))
    torch.save({'config': shipped.config.to_dict(), 'state': half_state(shipped.state_dict())},
               tmp_path / 'vision.pt')
    manifest = {'vision_training': {'volume_calibration': {'samples': 20}}}
    headed = VisionNetwork(tiny_config(lesion_head_width=4))
    assert _kept_calibration(tmp_path, headed, manifest) == (offsets, {'samples': 20})
    with torch.no_grad():
        next(headed.encoder.parameters()).add_(1.0)
    assert _kept_calibration(tmp_path, headed, manifest) is None


@pytest.mark.slow
def test_synthetic_lesions_reach_their_volume_and_infarcts_keep_to_one_hemisphere():
    pytest.importorskip('smriprep_freesurfer732')
    from vpcli.synth.dense import DenseSynthesizer, SynthesisSettings
    from vpcli.synth.vocabulary import load_vocabulary
    torch.set_num_threads(1)
    settings = SynthesisSettings(shape=(32, 32, 32), lesion_probability=1.0,
                                 field_of_view_probability=0.0)
    synthesizer = DenseSynthesizer(load_vocabulary().ids, ('infarct',), 'cpu', settings,
                                   ('fsaverage',), seed=5)
    # the threshold fills the drawn volume inside the allowed voxels
    axes = [torch.arange(32, dtype=torch.float32)] * 3
    coordinates = torch.stack(torch.meshgrid(*axes, indexing='ij'))
    field = synthesizer._lesion_field(coordinates, torch.tensor([16.0, 16.0, 16.0]), 4.0, 0)
    allowed = torch.zeros((32, 32, 32), dtype=torch.bool)
    allowed[:, :, :20] = True
    blob = synthesizer._fill(field, allowed, 4.0)
    assert int(blob.sum()) == 500  # 4 mL of 2 mm voxels
    assert not bool(blob[:, :, 20:].any())
    # a territorial lesion starts in one territory's cortex and fills it and the white
    # matter of that side only
    labels = synthesizer.sample(1).labels[0]
    cortex = synthesizer.territory_cortex.any(0)
    for _ in range(6):
        start, allowed = synthesizer._territory(labels)
        if not bool(start.any()):
            continue
        assert len(synthesizer.side_of[labels[allowed]].unique()) == 1
        assert bool(cortex[labels[start]].all())
        assert bool((cortex | synthesizer.cerebral_wm)[labels[allowed]].all())
    seen = 0
    for _ in range(3):
        batch = synthesizer.sample(2)
        seen += int((batch.lesions[:, 0] > 0).flatten(1).any(1).sum())
    assert seen >= 2


def test_radial_scaling_grows_and_shrinks_a_structure_without_folding():
    import math
    from vpcli.synth.dense import radial_scaling
    axes = [torch.arange(48, dtype=torch.float32)] * 3
    points = torch.stack(torch.meshgrid(*axes, indexing='ij'), -1)[None]  # 1 mm grid, mm
    sphere = ((points[0] - 24) ** 2).sum(-1) <= 6 ** 2
    volume = float(sphere.sum())

    def sampled(moved):
        index = moved.round().long().clamp(0, 47)
        return sphere[index[..., 0], index[..., 1], index[..., 2]]

    centre = torch.tensor([[[24.0, 24.0, 24.0]]])
    for factor, low, high in ((1.25, 1.4, 1.25 ** 3), (0.8, 0.8 ** 3, 0.8)):
        strength = torch.tensor([[1 - 1 / factor]])
        moved = radial_scaling(points, centre, torch.tensor([[8.0]]), strength)[0]
        ratio = float(sampled(moved).sum()) / volume
        assert low <= ratio <= high, (factor, ratio)
        # one-to-one: the map's Jacobian determinant stays positive everywhere
        jacobian = torch.stack([moved.diff(dim=a)[:47, :47, :47] for a in range(3)], -1)
        assert float(torch.linalg.det(jacobian.double()).min()) > 0
        # far from the structure nothing moves
        assert float((moved[0, 0, 0] - points[0, 0, 0, 0]).abs().max()) < 1e-3
    # the strongest shrink the recipes draw keeps every map one-to-one
    strength = torch.tensor([[1 - math.exp(0.5)]])
    moved = radial_scaling(points, centre, torch.tensor([[8.0]]), strength)[0]
    jacobian = torch.stack([moved.diff(dim=a)[:47, :47, :47] for a in range(3)], -1)
    assert float(torch.linalg.det(jacobian.double()).min()) > 0


@pytest.mark.slow
def test_structure_scaling_centres_on_deep_structures_and_keeps_samples_valid():
    pytest.importorskip('smriprep_freesurfer732')
    from vpcli.synth.dense import DenseSynthesizer, SynthesisSettings
    from vpcli.synth.vocabulary import load_vocabulary
    torch.set_num_threads(1)
    ids = load_vocabulary().ids
    settings = SynthesisSettings(shape=(32, 32, 32), lesion_probability=0.0, structure_scaling=0.3,
                                 structure_scaling_probability=1.0, field_of_view_probability=0.0)
    synthesizer = DenseSynthesizer(ids, LESIONS, 'cpu', settings, ('fsaverage',), seed=2)
    source = synthesizer.sources[0]
    centres = source['scalable_centres']
    assert centres is not None and 20 <= centres.shape[0] <= 40  # deep grey, ventricles, ...
    hippocampus = ids.index(17) + 1
    # the left hippocampus' centroid (mm) lies inside it on the source grid
    chosen = [i + 1 for i, label_id in enumerate(ids)
              if load_vocabulary().labels[label_id].tissue in DenseSynthesizer.SCALED_TISSUES]
    row = chosen.index(hippocampus)
    voxel = (centres[row] / source['spacing'].float()).round().long()
    assert int(source['labels'][0, 0][tuple(voxel)]) == hippocampus
    batch = synthesizer.sample(2)
    assert batch.labels.shape == (2, 32, 32, 32) and int(batch.labels.max()) <= len(ids)
    assert float(batch.image.min()) >= 0 and float(batch.image.max()) <= 1


@pytest.mark.parametrize('decoding', ['channel', 'component'])
def test_component_lesion_decoding_gives_each_lesion_whole_to_one_class(decoding):
    # lesion A: glioma 0.9 in its core, 0.45 in its rim, where infarct reads 0.52; lesion B:
    # infarct 0.9. Channels: the glioma is its core alone and the rim an infarct. Components:
    # A is one glioma (its glioma probability sums higher) and B an infarct.
    network = VisionNetwork(tiny_config(lesion_decoding=decoding)).eval()
    scan = scan_on()
    with torch.no_grad():
        encoding = network.encode([scan])
        probabilities = network.dense_probabilities(encoding)[0]
        anatomy = network.config.anatomy_channels
        glioma, infarct = anatomy + LESIONS.index('glioma'), anatomy + LESIONS.index('infarct')
        probabilities[anatomy:] = 0.02
        grid = probabilities.shape[1:]
        a_rim = torch.zeros(grid, dtype=torch.bool)
        a_rim[2:9, 2:9, 2:9] = True
        a_core = torch.zeros(grid, dtype=torch.bool)
        a_core[3:8, 3:8, 3:8] = True
        b = torch.zeros(grid, dtype=torch.bool)
        b[11:14, 11:14, 11:14] = True
        probabilities[glioma][a_rim] = 0.45
        probabilities[infarct][a_rim] = 0.52
        probabilities[glioma][a_core] = 0.9
        probabilities[infarct][a_core] = 0.1
        probabilities[infarct][b] = 0.9
        masks = {name: network.segment(encoding, name).volume.tensor[0].bool()
                 for name in ('glioma', 'infarct', 'lesion')}
    restore = encoding.prepared[0].restore

    def expected(region):
        return restore(region[None].float()).tensor[0] > 0.5

    assert torch.equal(masks['lesion'], expected(a_rim | b))
    if decoding == 'channel':
        assert torch.equal(masks['glioma'], expected(a_core))
        assert torch.equal(masks['infarct'], expected((a_rim & ~a_core) | b))
    else:
        assert torch.equal(masks['glioma'], expected(a_rim))
        assert torch.equal(masks['infarct'], expected(b))


def test_fitting_offsets_on_the_voxels_that_can_change_equals_fitting_on_all():
    """fit_offsets scores only voxels whose background is at most 0.5 (no label passes 0.5
    elsewhere); its offsets must equal the fixed-point steps on label_counts over every
    voxel, partial labels, mirrored sides and fitted channels included."""
    from vpcli.vision.calibration import MIN_VOXELS, fit_offsets, label_counts
    generator = torch.Generator().manual_seed(0)
    classes = 9
    logits = [torch.randn(classes, 20, 20, 20, generator=generator) * 1.5 for _ in range(3)]
    logits[0][0] += 1.0
    truths = [logit.argmax(0) for logit in logits]
    truths[1][0] = classes + 1  # a partially labelled slab counts nowhere
    mirror = [0, 2, 1, 4, 3, 5, 6, 8, 7]
    channels = torch.tensor([False] + [True] * 7 + [False])
    offsets = torch.zeros(classes)
    swap = torch.tensor(mirror)
    for _ in range(30):
        true, mask, _, _ = label_counts(logits, truths, offsets)
        true, mask = true + true[swap], mask + mask[swap]
        fitted = (true >= MIN_VOXELS) & channels
        step = -0.7 * torch.log((mask + 1) / (true + 1)).float()
        offsets = torch.where(fitted, (offsets + step).clamp(-3, 3), offsets)
    fast = fit_offsets(logits, truths, mirror, channels=channels)
    assert torch.equal(fast, offsets)
    assert bool((offsets[1:8] != 0).any()) and bool((offsets.abs() < 3).any())
