"""Quality control without ground truth (vpcli/quality.py): each kind of wrong mask is
flagged, a right one is not, and the flags reach metrics.json, stderr and the exit code."""

from __future__ import annotations

import numpy as np
import pytest

from vpcli.quality import (SCORE_THRESHOLD, assess, asymmetry_warnings, mask_signals,
                           plausible_range)

#: 1 mm RAS grid, voxel (0, 0, 0) at (-40, -40, -40) mm: x < 40 voxels is the left
AFFINE = np.array([[1.0, 0, 0, -40], [0, 1, 0, -40], [0, 0, 1, -40], [0, 0, 0, 1]])
SHAPE = (80, 80, 80)


def ball(centre, radius_mm, sharpness=1.0):
    """A probability map: a ball with a soft edge (logistic over ``sharpness`` mm)."""
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in SHAPE], indexing='ij'), -1)
    distance = np.linalg.norm(grid - np.array(centre), axis=-1)
    return 1 / (1 + np.exp((distance - radius_mm) / sharpness))


BRAIN = ball((40, 40, 40), 36)


def volume_ml(probability) -> float:
    return float((probability > 0.5).sum()) / 1000


def test_a_right_mask_is_not_flagged():
    hippocampus = ball((25, 40, 35), 9.5, sharpness=0.5)  # about 3.6 mL, left of centre
    signals = mask_signals(hippocampus, BRAIN, 'left hippocampus', AFFINE)
    assert signals['side'] == 'ok' and signals['components'] == 1
    assert signals['score'] > SCORE_THRESHOLD and signals['expected_dice'] > 0.85
    block = assess('left hippocampus', volume_ml(hippocampus), signals)
    assert block['flags'] == [] and block['plausible_ml'] == [2.0, 6.5]


def test_a_wrong_mask_of_the_right_size_is_flagged():
    mirrored = ball((55, 40, 35), 9.5, sharpness=0.5)  # the right hippocampus's place
    block = assess('left hippocampus', volume_ml(mirrored),
                   mask_signals(mirrored, BRAIN, 'left hippocampus', AFFINE))
    assert block['flags'] == ['the mask lies on the other side of the brain']
    # the right size on the right side, but a guess: probabilities hover around 0.5
    unsure = 0.45 + 0.2 * ball((25, 40, 35), 9.5, sharpness=0.5)
    unsure[BRAIN < 0.5] = 0
    block = assess('left hippocampus', 3.6, mask_signals(unsure, BRAIN, 'left hippocampus', AFFINE))
    assert any(flag.startswith('QC score') for flag in block['flags'])


def test_a_mask_the_size_of_the_brain_for_a_small_structure_is_flagged():
    block = assess('left hippocampus', volume_ml(BRAIN),
                   mask_signals(BRAIN, BRAIN, 'left hippocampus', AFFINE))
    assert any('outside the plausible adult range 2-6.5 mL' in flag for flag in block['flags'])
    # the case: 92.91 mL for a left hippocampus, without network signals
    assert assess('left hippocampus', 92.91, None)['flags'] == [
        'volume 92.91 mL is outside the plausible adult range 2-6.5 mL']


def test_an_empty_mask_is_flagged():
    empty = np.zeros(SHAPE)
    signals = mask_signals(empty, BRAIN, 'left hippocampus', AFFINE)
    assert signals['voxels'] == 0 and signals['score'] == 0
    assert assess('left hippocampus', 0.0, signals)['flags'] == ['empty mask']


def test_fragments_lower_the_score():
    whole = ball((25, 40, 35), 9.5, sharpness=0.5)
    scattered = whole.copy()
    for k in range(12):  # twelve small islands, far from the structure
        scattered = np.maximum(scattered, ball((50 + (k % 4) * 6, 20 + (k // 4) * 8, 60), 3.0, 0.5))
    a = mask_signals(whole, BRAIN, 'left hippocampus', AFFINE)
    b = mask_signals(scattered, BRAIN, 'left hippocampus', AFFINE)
    assert b['components'] == 13 and b['fragment_fraction'] > 0.2 and b['score'] < 0.8 * a['score']


def test_ranges_of_composite_targets_follow_from_their_parts():
    left, right = plausible_range('left hippocampus'), plausible_range('right hippocampus')
    assert plausible_range('bilateral hippocampus') == (left[0] + right[0], left[1] + right[1])
    cortex = plausible_range('bilateral cerebral cortex')
    assert cortex == (300.0, 760.0)
    brain = plausible_range('whole brain')
    assert 600 < brain[0] < 1000 < 1600 < brain[1] < 2500
    assert plausible_range('glioma') is None and plausible_range('no such thing') is None


def test_asymmetric_pairs_are_warned_about():
    volumes = [{'kind': 'mask', 'name': 'left hippocampus', 'volume_ml': 3.0},
               {'kind': 'mask', 'name': 'right_hippocampus', 'volume_ml': 6.0},
               {'kind': 'mask', 'name': 'left putamen', 'volume_ml': 5.0},
               {'kind': 'mask', 'name': 'right putamen', 'volume_ml': 5.5}]
    assert asymmetry_warnings(volumes) == [
        'hippocampus: left 3.00 mL and right 6.00 mL differ by 67 % (more than 50 %)']


@pytest.mark.slow
def test_flags_reach_metrics_stderr_and_the_strict_exit_code(tmp_path):
    """An exec run whose mask is implausible: metrics.json carries the warning, stderr has it
    as one line, exit 0, and 7 with --strict-qc (outputs written either way)."""
    import json

    from typer.testing import CliRunner

    from conftest import cube_scan
    from vpcli.cli import app
    scan = cube_scan(tmp_path / 'scan.nii.gz', 30, 5, 25)
    script = tmp_path / 'script.py'
    script.write_text('# step 1\nroi = threshold(img0, 0.5)\n# step 2\n'
                      'save(roi, "left hippocampus")\n')
    runner = CliRunner()
    result = runner.invoke(app, ['exec', str(script), str(scan), '-o', str(tmp_path / 'out'),
                                 '--no-qc'])
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / 'out' / 'metrics.json').read_text())
    assert metrics['warnings'] == ['left hippocampus: volume 64.00 mL is outside the plausible '
                                   'adult range 2-6.5 mL']
    assert 'voxelprompt: warning: left hippocampus: volume 64.00 mL' in result.output
    strict = runner.invoke(app, ['exec', str(script), str(scan), '-o', str(tmp_path / 'out2'),
                                 '--no-qc', '--strict-qc'])
    assert strict.exit_code == 7 and (tmp_path / 'out2' / 'metrics.json').is_file()
