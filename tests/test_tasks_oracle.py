"""Task world against synthetic scans: the oracle vision, the oracle check, ``voxelprompt synth``.

Cases come from :func:`vpcli.synth.cases.sample_case` at training resolution (a few
seconds each on 2 CPU cores), so these tests are marked slow.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from vpcli.cli import app
from vpcli.tasks.check import oracle_check
from vpcli.tasks.oracle import OracleVision, make_world
from vpcli.tasks.sampler import plan_task
from vpcli.tasks.templates import CATEGORIES

pytestmark = pytest.mark.slow


@pytest.fixture(scope='module')
def lesion_world():
    rng = np.random.default_rng(7)
    plan = plan_task(rng, 'location')
    return make_world(plan, rng)


def test_world_masks_follow_the_ontology(lesion_world):
    info, world = lesion_world
    left = world.mask('left hippocampus', 0).volume.tensor.bool()
    right = world.mask('right hippocampus', 0).volume.tensor.bool()
    both = world.mask('bilateral hippocampus', 0).volume.tensor.bool()
    assert left.any() and right.any()
    assert not (left & right).any()
    assert bool(((left | right) == both).all())
    # a lobe holds its cortex and the white matter nearest to it, and lobes do not overlap
    cortex = world.mask('left frontal cortex', 0).volume.tensor.bool()
    lobe = world.mask('left frontal lobe', 0).volume.tensor.bool()
    parietal = world.mask('left parietal lobe', 0).volume.tensor.bool()
    assert bool((cortex <= lobe).all()) and lobe.sum() > cortex.sum()
    assert not (lobe & parietal).any()
    assert 'left hippocampus' in info.present


def test_lesion_tags_agree_with_the_library_location(lesion_world):
    import torch

    from vpcli.library.characterization import OUTSIDE_ALL_REGIONS, location
    from vpcli.tasks.categories import LOCATION_REGIONS, REGION_LOBE
    from vpcli.volumes import Mask
    info, world = lesion_world
    assert info.lesions
    scan = world.first_scan(0)
    index = world.scan_index[scan.name]
    regions = [world.mask(r, 0) for r in LOCATION_REGIONS]
    region_of_lobe = {lobe: key for key, lobe in REGION_LOBE.items()}
    for lesion in info.lesions:
        inside = world.case.lesion_maps[index].tensor[0].numpy() == lesion.id
        mask = Mask(scan.volume.new(torch.from_numpy(inside[None].copy()), keep_labels=False),
                    scan.sources, 'lesion')
        where = location(mask, *regions)
        if 'lobe' not in lesion.tags:
            assert where == OUTSIDE_ALL_REGIONS
        elif lesion.tags['lobe'] == 'brainstem':
            assert where == 'brainstem'
        else:
            assert where == f'{lesion.tags["side"]} {region_of_lobe[lesion.tags["lobe"]]}'


def test_oracle_vision_answers_per_session():
    rng = np.random.default_rng(3)
    plan = plan_task(rng, 'volume_change')
    info, world = make_world(plan, rng)
    # the agent's state lines are the same whether written from the case summary or the scans
    assert [s.describe() for s in info.scans] == [s.describe() for s in world.case.scans]
    oracle = OracleVision(world)
    encoding = oracle.encode(world.case.scans)
    masks = oracle.segment(encoding, 'bilateral lateral ventricle')
    assert isinstance(masks, tuple) and len(masks) == 2
    for session, mask in enumerate(masks):
        assert tuple(mask.volume.shape) == tuple(world.first_scan(session).volume.shape)


def test_oracle_check_passes_for_every_category():
    report = oracle_check(len(CATEGORIES) * 12, seed=123, tasks_per_case=30)
    failures = [(r.category, r.prompt, r.problems) for r in report.results if r.problems]
    assert not failures, failures[:5]
    assert all(total == 12 for _, total in report.by_category().values())


def test_synth_command_writes_cases_and_is_reproducible(tmp_path):
    runner = CliRunner()
    first = runner.invoke(app, ['synth', '-n', '2', '--seed', '5', '-o', str(tmp_path / 'a')])
    assert first.exit_code == 0, first.output
    second = runner.invoke(app, ['synth', '-n', '2', '--seed', '5', '-o', str(tmp_path / 'b')])
    assert second.exit_code == 0, second.output
    for task in sorted(p.name for p in (tmp_path / 'a').iterdir()):
        a, b = tmp_path / 'a' / task, tmp_path / 'b' / task
        names = sorted(p.name for p in a.iterdir())
        assert {'prompt.txt', 'program.py', 'expected.json', 'preview.png', 'img0.nii.gz'} <= set(names)
        assert any(n.startswith('truth_') for n in names)
        for name in ('prompt.txt', 'program.py', 'expected.json'):
            assert (a / name).read_text() == (b / name).read_text()
        import nibabel as nib
        assert np.array_equal(np.asarray(nib.load(a / 'img0.nii.gz').dataobj),
                              np.asarray(nib.load(b / 'img0.nii.gz').dataobj))
        record = json.loads((a / 'expected.json').read_text())
        assert record['category'] in CATEGORIES and record['program'].startswith('# step 1')
    refused = runner.invoke(app, ['synth', '-n', '1', '-o', str(tmp_path / 'a')])
    assert refused.exit_code == 3  # non-empty folder without --overwrite


def test_synth_oracle_check_command():
    result = CliRunner().invoke(app, ['synth', '--oracle-check', '-n', str(len(CATEGORIES)),
                                      '--seed', '9'])
    assert result.exit_code == 0, result.output
    assert 'overall: 17/17 passed (100.00%)' in result.output
