"""``voxelprompt eval``: Dice and output errors, program comparison, scan transforms, and every
suite run for real on the tiny weights (held-out prompts and cases only)."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from vpcli import evaluate as ev
from vpcli.evaluate.end_to_end import _median_with_missing
from vpcli.evaluate.prompts import _dry_run
from vpcli.evaluate.tasks import _draw_task, _task_line
from vpcli.cli import app
from vpcli.tasks.categories import Expected
from vpcli.tasks.described import is_held_out
from vpcli.tasks.templates import CATEGORIES

torch.set_num_threads(1)


# ----- helpers with known answers ---------------------------------------------------

def test_dice_of_hand_made_masks():
    a = np.zeros((4, 4, 4), bool)
    b = np.zeros((4, 4, 4), bool)
    a[0, 0, :4] = True            # 4 voxels
    b[0, 0, 2:4] = True           # 2 voxels, both inside a
    b[1, 1, 1] = True             # 1 voxel outside a
    assert ev.dice(a, b) == pytest.approx(2 * 2 / (4 + 3))
    assert ev.dice(a, a) == 1.0
    assert ev.dice(a, np.zeros_like(a)) == 0.0
    assert ev.dice(np.zeros_like(a), np.zeros_like(a)) == 1.0   # both empty: nothing to miss
    with pytest.raises(ValueError):
        ev.dice(a, np.zeros((4, 4, 5), bool))


def test_mask_dice_resamples_onto_the_truth_grid():
    import voxel as vx

    from conftest import make_geometry
    from vpcli.volumes import Mask
    geometry = make_geometry((10, 12, 8), (1.0, 1.0, 2.0), 'RAS')
    truth = torch.zeros(1, 10, 12, 8, dtype=torch.bool)
    truth[0, 2:6, 3:9, 2:5] = True
    truth_mask = Mask(vx.Volume(truth, geometry), description='box')
    # the same box on a permuted, flipped grid (the same world): Dice 1 after resampling
    moved = vx.Volume(truth, geometry).reorient('PIL')
    assert tuple(moved.baseshape) != (10, 12, 8)
    assert ev.mask_dice(Mask(moved, description='box'), truth_mask) == pytest.approx(1.0)
    half = truth.clone()
    half[0, 4:6] = False                      # keep 2 of 4 slabs: Dice 2*2/(2+4)
    assert ev.mask_dice(Mask(vx.Volume(half, geometry)), truth_mask) == pytest.approx(2 / 3)


def test_program_comparison():
    target = ["enc = encode(img0<MOD>)\n", "roi = segment(enc, 'left hippocampus'<MOD>)\n",
              "v = volume(roi)\noutput('volume', v, 'mL')\n"]
    assert ev.programs_match(target, target) == (True, True)
    spaced = ["enc = encode(img0<MOD>)\n", "roi = segment(enc,  'left hippocampus'<MOD>)\n",
              target[2]]
    assert ev.programs_match(spaced, target) == (True, True)          # whitespace only
    quoted = [target[0], 'roi = segment(enc, "left hippocampus"<MOD>)\n', target[2]]
    assert ev.programs_match(quoted, target) == (False, True)         # same AST
    merged = [target[0] + target[1], target[2]]
    assert ev.programs_match(merged, target) == (False, True)         # same statements
    other = [target[0], "roi = segment(enc, 'right hippocampus'<MOD>)\n", target[2]]
    assert ev.programs_match(other, target) == (False, False)
    no_phi = [target[0], "roi = segment(enc, 'left hippocampus')\n", target[2]]
    assert ev.programs_match(no_phi, target) == (False, False)        # φ slot matters


def test_output_errors():
    expected = Expected(outputs={'volume': (10.0, 'mL'), 'bounding_box': ((10.0, 20.0, 40.0), 'mm'),
                                 'asymmetry': (5.0, '%'), 'zero': (0.0, 'mm')},
                        answer=None, masks={}, images={})
    got = {'volume': (9.0, 'mL'), 'bounding_box': ((11.0, 20.0, 36.0), 'mm'),
           'asymmetry': (5.0, 'ratio'), 'zero': (0.5, 'mm')}
    errors = ev.output_errors(got, expected)
    assert errors['volume']['relative'] == pytest.approx(0.1)
    assert errors['volume']['absolute'] == pytest.approx(1.0)
    assert errors['bounding_box']['relative'] == pytest.approx((0.1 + 0 + 0.1) / 3)
    assert errors['asymmetry']['missing']                              # wrong unit
    assert errors['zero']['relative'] == pytest.approx(0.5)            # absolute when truth is 0
    assert ev.output_errors({}, expected)['volume']['missing']
    assert _median_with_missing([0.1, None, None]) is None
    assert _median_with_missing([0.1, 0.3, None]) == pytest.approx(0.3)


def test_transform_scans_keep_the_world():
    import voxel as vx

    from conftest import GEOMETRIES, make_geometry, sphere_phantom
    from vpcli.volumes import Scan
    geometry = make_geometry(**GEOMETRIES['lps_aniso'])
    image = sphere_phantom(geometry, (3.0, -5.0, 7.0), 12.0).float()
    scan = Scan(vx.Volume(image.tensor, geometry), 'img0', modality='T1w')
    [reoriented] = ev.transform_scans([scan], reorient=True)
    assert reoriented.name == 'img0' and reoriented.modality == 'T1w'
    assert reoriented.volume.geometry.orientation.name != geometry.orientation.name
    back = reoriented.volume.reorient(geometry.orientation.name)
    assert torch.equal(back.tensor, scan.volume.tensor)
    assert torch.allclose(back.geometry.tensor, geometry.tensor.to(back.geometry.tensor.dtype))
    [fine] = ev.transform_scans([scan], spacing_mm=1.5)
    assert torch.allclose(fine.volume.geometry.spacing.float(), torch.full((3,), 1.5), atol=1e-4)
    # the sphere keeps its volume (mL) on the new grid within partial-volume error
    voxel_ml = lambda v: float(v.geometry.spacing.prod()) / 1000  # noqa: E731
    before = float((scan.volume.tensor > 0.5).sum()) * voxel_ml(scan.volume)
    after = float((fine.volume.tensor > 0.5).sum()) * voxel_ml(fine.volume)
    assert after == pytest.approx(before, rel=0.1)


def test_unknown_suite_is_a_one_line_bad_input_error(tmp_path):
    result = CliRunner().invoke(app, ['eval', '--suite', 'nonsense', '--weights', str(tmp_path)])
    assert result.exit_code == 3
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and 'nonsense' in lines[0] and 'prompts' in lines[0]
    result = CliRunner().invoke(app, ['eval', '--suite', 'anatomy', '--programs', 'oracle',
                                      '--weights', str(tmp_path)])
    assert result.exit_code == 3


def test_missing_weights_folder_is_bad_input(tmp_path):
    result = CliRunner().invoke(app, ['eval', '--suite', 'prompts', '--weights',
                                      str(tmp_path / 'none'), '--device', 'cpu'])
    assert result.exit_code == 3


# ----- suites on the tiny weights ---------------------------------------------------------

@pytest.fixture(scope='module')
def bundle(tiny_weights):
    from vpcli.weights import load_bundle
    return load_bundle(tiny_weights, 'cpu')


@pytest.mark.slow
def test_dry_run_scores_a_written_program_as_exact(bundle):
    """The tiny agent writes its toy corpus's programs exactly: the comparison says so."""
    from agent_corpus import SCANS, program
    from vpcli.agent.episodes import episode_from_program
    prompt = 'what is the volume of the left hippocampus?'
    record, problem, status = _dry_run(bundle, prompt, SCANS[1], 0)
    assert status == 'ok' and problem is None and not record.refused and record.steps
    episode = episode_from_program(prompt, SCANS[1], ['img0'], program('volume', 'left hippocampus'),
                                   np.random.default_rng(0))
    assert ev.programs_match([s.model_text for s in record.steps], episode.steps) == (True, True)


@pytest.mark.slow
def test_prompts_suite_reports_every_category_and_the_refusal_suite(bundle):
    result = ev.evaluate('prompts', bundle, count=2, seed=3)
    assert result['suite'] == 'prompts' and result['weights_sha256'] == bundle.sha256
    per = result['per_category']
    assert list(per) == list(CATEGORIES) and len(per) == 17
    for entry in per.values():
        assert entry['n'] == 2
        assert 0.0 <= entry['accuracy'] <= entry['equivalent_accuracy'] <= 1.0
        assert entry['equivalent'] + entry['refused'] + entry['rejected'] + entry['errors'] <= entry['n']
        assert entry['programs'] + entry['refused'] == entry['n']
    metrics = result['metrics']
    assert metrics['episodes'] == 34 and 0.0 <= metrics['accuracy'] <= 1.0
    assert metrics['sandbox_rejected'] == 0 and metrics['internal_errors'] == 0
    assert all(is_held_out(example['prompt']) for example in result['examples'])
    refusal = result['refusal']
    assert refusal['n'] == 47 and sum(e['n'] for e in refusal['per_kind'].values()) == 47
    assert refusal['refused'] == refusal['refused_by_gate'] + refusal['refused_by_model']
    assert refusal['outside_library'] == 0 and refusal['errors'] == 0
    assert refusal['refused_by_gate'] >= 30          # host, injection and non-brain prompts
    # seeded: the same call gives the same numbers
    again = ev.evaluate('prompts', bundle, count=2, seed=3)
    assert {k: v for k, v in again.items() if k != 'seconds'} == \
        {k: v for k, v in result.items() if k != 'seconds'}
    assert ev.headline(result).startswith('prompts: exact program match')


@pytest.mark.slow
def test_eval_cli_json_and_table(tiny_weights):
    runner = CliRunner()
    result = runner.invoke(app, ['eval', '--suite', 'prompts', '--count', '1', '--json', '--quiet',
                                 '--weights', str(tiny_weights), '--device', 'cpu', '--threads', '1'])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert {'suite', 'weights_sha256', 'count', 'seed', 'device', 'seconds', 'metrics',
            'per_category'} <= set(report)
    assert report['count'] == 1 and report['device'] == 'cpu'
    table = runner.invoke(app, ['eval', '--suite', 'prompts', '--count', '1', '--quiet',
                                '--weights', str(tiny_weights), '--device', 'cpu'])
    assert table.exit_code == 0
    lines = table.stdout.strip().splitlines()
    assert lines[-1].startswith('prompts: exact program match') and 'tissue_removal' in table.stdout


@pytest.mark.slow
def test_anatomy_suite_runs_end_to_end(bundle):
    for programs in ('agent', 'target'):
        result = ev.evaluate('anatomy', bundle, count=1, seed=0, programs=programs)
        [task] = result['tasks']
        assert 0.0 <= result['metrics']['mean_dice'] <= 1.0
        assert result['per_target'] == {task['target']: {'n': 1, 'mean_dice': task['dice']}}
        assert task['kind'] == 'subcortical' and is_held_out(task['prompt'])
        if programs == 'target':      # k* ran with the live network: a real mask was scored
            assert task['status'] == 'k* written' and task['error'] is None and task['text_match']
        json.dumps(result, allow_nan=False)
    draft, world = _draw_task('anatomy', 0, 0, 'segmentation',
                                 lambda d, w: True, lambda plan: not plan.params['lesion'])
    assert world.case.split == 'eval'


@pytest.mark.slow
def test_other_scan_suites_run(bundle):
    """Lesions, characterization, end-to-end and consistency with one task each (k* for φ,
    so the untrained tiny network is what is measured)."""
    lesions = ev.evaluate('lesions', bundle, count=1, programs='target')
    assert 0.0 <= lesions['metrics']['mean_dice'] <= 1.0 and len(lesions['per_class']) == 1
    characterization = ev.evaluate('characterization', bundle, count=1, programs='target')
    [task] = characterization['tasks']
    assert task['category'] == 'location' and task['expected']
    assert characterization['metrics']['accuracy'] in (0.0, 1.0)
    assert characterization['metrics']['accuracy'] == float(task['answers'] == [task['expected']])
    end_to_end = ev.evaluate('end-to-end', bundle, count=1, programs='target')
    [task] = end_to_end['tasks']
    assert task['category'] == 'volume' and task['output'] == 'volume' and task['unit'] == 'mL'
    if not task['missing']:
        assert task['relative_error'] == pytest.approx(
            abs(task['got'] - task['expected']) / task['expected'])
    consistency = ev.evaluate('consistency', bundle, count=1, programs='target')
    [case] = consistency['cases']
    assert list(case['variants']) == list(ev.CONSISTENCY_VARIANTS)
    original, reoriented = case['variants']['original'], case['variants']['reoriented']
    # the network reads every scan in RAS order: a re-oriented scan gives the same mask
    assert original['volume'] is not None and reoriented['volume'] is not None
    assert reoriented['volume'] == pytest.approx(original['volume'], rel=1e-6, abs=1e-9)
    for result in (lesions, characterization, end_to_end, consistency):
        json.dumps(result, allow_nan=False)
        assert ev.headline(result) in ev.format_result(result)
    if case['spread'] is not None:
        volumes = [v['volume'] for v in case['variants'].values()]
        assert case['spread'] == pytest.approx((max(volumes) - min(volumes)) / float(np.median(volumes)))
    assert math.isfinite(consistency['seconds'])


@pytest.mark.slow
def test_an_agent_written_program_is_run_and_its_mask_scored(bundle):
    """The agent path of the scan suites: the tiny agent writes its toy program (segment, then
    save: one mask, listed twice in the run) on a held-out case; the mask is scored once."""
    import dataclasses
    import datetime

    draft, world = _draw_task(
        'anatomy', 0, 0, 'segmentation', lambda d, w: 'left hippocampus' in w.present_targets(),
        lambda plan: not plan.params['lesion'] and len(plan.request.sessions[0]) == 1)
    draft = dataclasses.replace(draft, prompt='segment the left hippocampus',
                                segments=(('roi', 'left hippocampus'),))
    # the scan line the toy corpus was trained with
    scans = [dataclasses.replace(world.case.scans[0], modality='T1w',
                                 date=datetime.date(2020, 1, 1), session='01')]
    task = ev.run_task(bundle, draft, world, scans, programs='agent')
    assert not task.refused and task.error is None and not task.program_match
    assert re.search(r"segment\(enc, '[^']*'<MOD>\)", task.record.model_program())
    assert len([e for e in task.program_run.context.saved if e.kind == 'mask']) == 2
    [score] = ev.score_masks(task, scans)
    assert score['text_match'] and score['mask'] == 'left hippocampus'
    truth = world.mask('left hippocampus', 0).volume.tensor[0].numpy()
    made = task.program_run.context.saved[0].volume.volume.tensor[0].numpy()
    assert score['dice'] == pytest.approx(ev.dice(made, truth))


@pytest.mark.slow
def test_example_suite_scores_the_real_scan(bundle):
    from vpcli.evaluate import EXAMPLE_PROMPTS, evaluate
    result = evaluate('example', bundle, programs='target')
    for prompt, target, ids in EXAMPLE_PROMPTS:
        entry = result['per_prompt'][prompt]
        assert entry['target'] == target and entry['program_match'] and entry['volume_ml'] >= 0
        assert (entry['dice'] is None) == (ids is None)
        assert ids is None or 0.0 <= entry['dice'] <= 1.0
    assert result['metrics']['prompts'] == sum(ids is not None for _, _, ids in EXAMPLE_PROMPTS)
    assert 0.0 <= result['metrics']['target_overlap'] <= 1.0


@pytest.mark.slow
def test_record_writes_manifest_evaluation_and_model_card(tiny_weights, tmp_path):
    import json
    import shutil
    folder = tmp_path / 'weights'
    shutil.copytree(tiny_weights, folder)
    result = CliRunner().invoke(app, ['eval', '--suite', 'prompts', '--count', '1', '--weights',
                                      str(folder), '--record', '--quiet'])
    assert result.exit_code == 0, result.output
    manifest = json.loads((folder / 'manifest.json').read_text())
    suites = manifest['evaluation']['suites']
    assert list(suites) == ['prompts'] and suites['prompts']['count'] == 1
    assert manifest['evaluation']['machine'] and manifest['evaluation']['command'].startswith('voxelprompt eval')
    card = (folder / 'MODEL_CARD.md').read_text()
    assert suites['prompts']['headline'].split(': ', 1)[1] in card
    # the checksums still hold: the manifest and card are not weights files
    from vpcli.weights import verify_manifest
    assert verify_manifest(folder)['weights_sha256']


def test_real_suite_names_exist_in_the_atlases_and_the_ontology():
    """Every deep-grey structure of the real suite is a target `segment` knows and, where
    the suite says so, a label of the atlas it is scored against."""
    from vpcli.real_suite import ATLASES, DEEP_GREY, LARGE, _load_atlas
    from vpcli.tasks.ontology import load_ontology
    targets = load_ontology().targets
    for name in ATLASES:
        atlas = _load_atlas(name)
        for target, names in DEEP_GREY:
            assert target in targets
            if names[name] is not None:
                assert names[name] in atlas.names, (name, names[name])
    neuromorphometrics = _load_atlas('neuromorphometrics')
    for target, label in LARGE:
        assert target in targets and label in neuromorphometrics.names, (target, label)


def test_real_suite_atlas_masks_land_on_the_scan_grid():
    """A reference meets a scan in world coordinates: the left thalamus of each atlas lies
    left of the midline, 5-13 mL, on a 2 mm grid of the MNI box."""
    import voxel as vx
    from vpcli.real_suite import ATLASES, _load_atlas
    geometry = vx.geometry_from_spacing(torch.Size((91, 109, 91)), 2.0, 'RAS')
    matrix = geometry.tensor.clone()
    matrix[:3, 3] = torch.tensor([-90.0, -126.0, -72.0])
    grid = vx.AcquisitionGeometry(torch.Size((91, 109, 91)), matrix)
    names = {'harvard_oxford': 'Left_Thalamus', 'neuromorphometrics': 'Left_Thalamus_Proper',
             'aal': 'Thalamus_L'}
    for name in ATLASES:
        mask = _load_atlas(name).mask(names[name], grid)
        assert mask.shape == (91, 109, 91)
        assert 5 < mask.sum() * 8 / 1000 < 13, name
        x = np.argwhere(mask)[:, 0] * 2.0 - 90.0
        assert x.mean() < -5, name
    assert _load_atlas('aal').mask('no such structure', grid) is None


@pytest.mark.slow
def test_the_anatomy_scoring_ranks_a_right_mask_above_wrong_ones():
    """Behaviour, not shape: through the suite's own scoring (``score_masks``), the true mask
    of a held-out case scores 1, the same mask moved 8 voxels scores low, and a mask of a
    different structure or of nothing scores about 0."""
    import types

    import torch

    from vpcli.library.context import SavedVolume
    from vpcli.volumes import Mask
    draft, world = _draw_task('anatomy', 0, 0, 'segmentation',
                                 lambda d, w: 'left putamen' in w.present_targets(),
                                 lambda plan: not plan.params['lesion']
                                 and len(plan.request.sessions) == 1)
    draft = types.SimpleNamespace(segments=(('roi', 'left putamen'),))
    name = world.case.scans[0].name
    truth = world.mask_on('left putamen', name)

    def score(volume_tensor, description='left putamen'):
        mask = Mask(truth.volume.new(volume_tensor), truth.sources, description)
        run = types.SimpleNamespace(context=types.SimpleNamespace(
            saved=[SavedVolume(name=description, volume=mask, sources=mask.sources, step=0,
                               kind='mask')]))
        task = types.SimpleNamespace(program_run=run, draft=draft, world=world)
        [entry] = ev.score_masks(task)
        return entry['dice']

    tensor = truth.volume.tensor.bool()
    assert score(tensor) == pytest.approx(1.0)
    assert score(torch.roll(tensor, 8, dims=1)) < 0.35
    other = world.mask_on('right putamen', name).volume.tensor.bool()
    assert score(other, 'right putamen') < 0.05
    assert score(torch.zeros_like(tensor)) == 0.0


@pytest.mark.slow
def test_a_target_program_that_fails_is_not_counted_as_written(bundle):
    """With --programs target, k* counts as written only when it ran: a run that stops on a
    failing step is a failure, not a match (it used to be counted as k* written)."""
    import dataclasses
    draft, world = _draw_task('anatomy', 0, 0, 'segmentation', lambda d, w: True,
                                 lambda plan: not plan.params['lesion'])
    good = ev.run_task(bundle, draft, world, programs='target')
    assert good.error is None and good.program_match
    broken = dataclasses.replace(draft, program=draft.program + '# step 9\nx = volume(img0)\n')
    task = ev.run_task(bundle, broken, world, programs='target')
    assert task.error and not task.program_match and _task_line(task) == 'failed'


def test_suites_with_a_fixed_set_refuse_a_count(tiny_weights):
    """The example and real suites run a fixed set: a --count they would ignore is an error,
    not a number reported beside results it did not shape."""
    runner = CliRunner()
    for suite in ('example', 'real'):
        result = runner.invoke(app, ['eval', '--suite', suite, '--count', '3', '--quiet',
                                     '--weights', str(tiny_weights), '--device', 'cpu'])
        assert result.exit_code == 3 and '--count 3' in result.output, result.output


@pytest.mark.slow
def test_paraphrases_suite_scores_every_category_by_result(bundle):
    result = ev.evaluate('paraphrases', bundle, count=1, seed=2)
    per = result['per_category']
    assert list(per) == list(CATEGORIES)
    m = result['metrics']
    assert m['prompts'] == 17 and 0.0 <= m['task_correct'] <= 1.0
    assert m['missed_refused'] == m['refused_by_gate'] + m['refused_by_model']
    misses = sum(m[f'missed_{k}'] for k in ('refused', 'target', 'scan', 'measurement', 'other',
                                            'rejected', 'error'))
    assert round(m['task_correct'] * 17) + misses == 17
    assert m['refused_by_gate'] == 0  # the gate lets every in-scope paraphrase through
    assert ev.headline(result).startswith('paraphrases: task-correct')
    assert m['plain_commands'] == 40 and 0 <= m['plain_refused'] <= 40 - m['plain_correct']
    assert len(result['plain_failures']) == 40 - m['plain_correct']
    assert 'plain commands:' in ev.headline(result)


class _AtlasNetwork:
    """A stand-in vision network whose masks are the references themselves (Harvard-Oxford
    for deep grey, Neuromorphometrics for large structures), or with ``swap`` the other
    side's: the real suite's scoring must rank the first at 1 and the second low."""

    def __init__(self, swap: bool = False) -> None:
        from vpcli.real_suite import DEEP_GREY, LARGE, _load_atlas
        self.swap = swap
        self.atlases = {name: _load_atlas(name) for name in ('harvard_oxford', 'neuromorphometrics')}
        self.names = {target: ('harvard_oxford', names['harvard_oxford']) for target, names in DEEP_GREY}
        self.names.update({target: ('neuromorphometrics', name) for target, name in LARGE})

    def eval(self):
        return self

    def encode(self, scans):
        return scans[0]

    def head_sizes(self, scan):
        return [None]  # no head size estimate: the suite records none

    def segment(self, scan, target):
        from vpcli.volumes import Mask
        if self.swap and target.split()[0] in ('left', 'right'):
            side = target.split()[0]
            target = target.replace(side, 'right' if side == 'left' else 'left', 1)
        grid = scan.volume.geometry
        if target in self.names:
            atlas, name = self.names[target]
            mask = self.atlases[atlas].mask(name, grid)
        else:  # white matter and whole brain: not what this test scores
            mask = (scan.volume.tensor[0] > 0).cpu().numpy()
        return Mask(volume=scan.volume.new(torch.from_numpy(mask)[None], keep_labels=False),
                    sources=scan.sources, description=target)


@pytest.mark.slow
def test_the_real_suite_scores_the_references_at_one_and_the_wrong_side_low(monkeypatch):
    """Behaviour, through the real suite's own code: masks equal to the references score
    Dice 1 against them; the same masks of the other hemisphere score near 0."""
    import functools
    from types import SimpleNamespace

    from vpcli import real_suite as module
    from vpcli.real_suite import real_suite
    # the stand-in reads its references from the suite's own atlases (each read once)
    monkeypatch.setattr(module, '_load_atlas', functools.lru_cache(maxsize=None)(module._load_atlas))
    right = real_suite(SimpleNamespace(vision=_AtlasNetwork()))['metrics']
    assert right['deep_grey_dice_per_atlas']['harvard_oxford'] == pytest.approx(1.0)
    assert right['large_structure_dice'] == pytest.approx(1.0)
    assert right['deep_grey_dice_per_atlas']['neuromorphometrics'] < 1.0  # another protocol
    # AAL (drawn on Colin27, a training source) is left out of the independent mean
    per_atlas = right['deep_grey_dice_per_atlas']
    assert right['deep_grey_dice_without_aal'] == pytest.approx(
        (per_atlas['harvard_oxford'] + per_atlas['neuromorphometrics']) / 2)
    # every scan's head size is recorded, here as unknown (the stand-in estimates none)
    assert right['etiv_ml'] == dict.fromkeys(('icbm2009', 'mni152', 'mni305', 'mni305_stripped'))
    wrong = real_suite(SimpleNamespace(vision=_AtlasNetwork(swap=True)))['metrics']
    assert wrong['deep_grey_dice_per_atlas']['harvard_oxford'] < 0.05
    assert wrong['large_structure_dice'] < 0.4  # the brainstem has no side: it stays right


@pytest.mark.parametrize('orientation', ['RAS', 'LIA'])
def test_partial_fields_of_view_cut_the_brain_by_world_height(orientation):
    import voxel as vx

    from conftest import make_geometry
    from vpcli.real_suite import FIELD_OF_VIEW_CUTS, partial_fields_of_view
    from vpcli.volumes import Scan, SourceRef
    geometry = make_geometry((10, 12, 14), (2.0, 2.0, 2.0), orientation)
    volume = vx.Volume(torch.ones((1, 10, 12, 14)), geometry)
    scan = Scan(volume=volume, name='img0', sources=(SourceRef('img0', 'img0.nii.gz'),))
    z = geometry.grid('world', device='cpu')[..., 2].numpy()
    brain = (z > z.min() + 3) & (z < z.max() - 3)
    low, high = z[brain].min(), z[brain].max()
    cuts = partial_fields_of_view(scan, brain)
    assert set(cuts) == set(FIELD_OF_VIEW_CUTS)
    for check, (cropped, kept) in cuts.items():
        side, fraction = FIELD_OF_VIEW_CUTS[check]
        if side == 'top':
            assert np.array_equal(kept, z <= high - fraction * (high - low))
        else:
            assert np.array_equal(kept, z >= low + fraction * (high - low))
        assert np.array_equal(cropped.volume.tensor[0].numpy() > 0, kept)
        assert 0 < kept.sum() < kept.size


@pytest.mark.parametrize('atlas_name', ['harvard_oxford', 'neuromorphometrics'])
def test_an_atlas_reference_is_the_structure_resampled_on_its_own(atlas_name):
    """The real suite reads every reference through one resampling of the atlas' voxel
    numbers per grid; each must equal the structure resampled alone (nearest neighbour),
    on an oblique grid that reaches outside the atlas."""
    import voxel as vx

    from conftest import make_geometry
    from vpcli.real_suite import _load_atlas
    atlas = _load_atlas(atlas_name)
    grid = make_geometry((70, 84, 60), (3.0, 2.5, 3.5), 'LIA', rotation_deg=(10, -7, 4),
                         center_mm=(5, -10, 8))
    for name in list(atlas.names)[:4]:
        index = atlas.names[name]
        data = atlas.volume.tensor
        region = data[index] >= 50 if atlas.probabilistic else data[0] == index
        alone = atlas.volume.new(region[None].to(torch.float32)).resample_like(grid, mode='nearest')
        expected = alone.tensor[0].numpy() > 0.5
        assert np.array_equal(atlas.mask(name, grid), expected), name
    assert isinstance(atlas.volume, vx.Volume) and (atlas.nearest_voxels(grid) == -1).any()
