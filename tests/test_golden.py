"""The golden end-to-end test: the shipped weights, the bundled real example scan, three
segmentation prompts, through the installed ``voxelprompt run`` command.

References: the example's tissue label map, made from the MNI ICBM152 2009c template's own
grey/white-matter probability maps (nilearn): a voxel takes the class whose probability is
largest when that probability is above 0.5 (``vpcli/examples.py``). The white-matter label
(2) includes cerebellar white matter, which the target (cerebral white matter) does not;
the grey-matter label (1) holds cortical, deep and cerebellar grey matter, as the target
``grey matter`` does.

A floor only ever goes up: an export that scores below it is a regression, and this test
says so. The aims are 0.90 (white matter) and 0.95 (brain) (issue 20). Measured with
``voxelprompt eval --suite example`` (the model card records each run); each floor is the
best figure shipped weights have reached:

- white matter 0.912 (0.9123: the fifth run, steps 23,600-24,000 averaged, with the
  colin27 anatomy source), 0.906 before (0.9062: the whole-network continuation's third run, steps
  17,600-18,000 averaged, trained with bf16 autocast), 0.902 before (0.9024: the
  whole-network continuation, steps 12,400-12,900 averaged,
  with the brain's edge refined too; 0.8968 without the edge; the network before it 0.8941
  with the edge), 0.889 before (0.8891: the same network, refined, with flip averaging back
  on, which the shipped config had lost; 0.8734 without flip averaging, docs/vision.md;
  0.7682 without refinement either: the dense network trained on fsaverage and GCA draws,
  weights averaged over steps 9,700, 10,000, 10,200 and 10,300, volume-calibrated at export;
  0.7661 uncalibrated, 0.7534 at steps 7,100-8,000, 0.7498 before);
- grey matter 0.918 (0.9186, steps 23,600-24,000), 0.910 before (0.9105, steps 17,600-18,000), 0.909 before (0.9094 with the edge
  refined; 0.8838 without; the network before it 0.9091 with the edge), 0.882 before (0.8825 refined and flip-averaged; 0.8691 refined;
  0.8046 without refinement, when the language model of step 27,800 began to segment the
  ``grey matter`` target, cortex, deep grey and cerebellar cortex; until then "segment the
  grey matter" segmented the cerebral cortex alone, whose floor was 0.690: 0.6908, 0.6904,
  0.6777 and 0.3857 before) and brain 0.981 (0.9819 at steps 23,600-24,000), 0.978 before
  (0.9784 at steps 17,600-18,000; 0.9787 with
  the edge refined: the brain ends
  where the scan shows it; 0.9660 without; the network before it 0.9827 with the edge,
  0.9698 without), 0.969 before (0.9698 refined and flip-averaged; 0.9674 refined; 0.9670,
  0.9669, 0.9622 and 0.9223 before). The one-channel network of step 23,300 scored 0.732 and
  0.965 on these by returning a mask of the whole brain for every target (1,691 mL for the
  cortex), so those figures are not floors.

Each check also has a one-line intensity baseline (``BASELINES``) the model must beat;
where it does not yet, ``NOT_BEATEN_YET`` says by how much and the test is a strict xfail.
Since intensity refinement, every check beats its baseline (white matter 0.912 against
0.804, grey matter 0.918 against 0.812), so the assertion binds for all three.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

WM_FLOOR = 0.912
GM_FLOOR = 0.918
BRAIN_FLOOR = 0.981
#: prompt -> (target k* segments, reference labels, floor; module docstring)
CHECKS = {
    'segment the white matter': ('bilateral cerebral white matter', (2,), WM_FLOOR),
    'segment the grey matter': ('bilateral grey matter', (1,), GM_FLOOR),
    'segment the brain': ('whole brain', (1, 2), BRAIN_FLOOR),
}

REPO = Path(__file__).resolve().parent.parent


def _voxelprompt() -> list[str]:
    found = shutil.which('voxelprompt', path=str(Path(sys.executable).parent))
    return [found] if found else [sys.executable, '-m', 'vpcli']


#: a one-line intensity rule per check, fixed (not tuned to the reference): the model must
#: beat it. Voxels are the example T1's; ``nonzero`` its non-zero voxels.
BASELINES = {
    'segment the white matter': 'T1 above the median of the non-zero voxels',
    'segment the grey matter': 'T1 between the 10th percentile and the median of the non-zero voxels',
    'segment the brain': 'every non-zero voxel (the example is skull-stripped)',
}


def baseline_mask(prompt: str, t1: np.ndarray) -> np.ndarray:
    values = t1[t1 > 0]
    if prompt == 'segment the white matter':
        return t1 > np.median(values)
    if prompt == 'segment the grey matter':
        return (t1 > np.percentile(values, 10)) & (t1 <= np.median(values))
    return t1 > 0


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * (a & b).sum() / (a.sum() + b.sum()))


@pytest.fixture(scope='module')
def golden_runs(example_dataset, tmp_path_factory):
    """Each golden prompt run once through ``voxelprompt run``: prompt -> (metrics, out, Dice)."""
    runs = {}
    reference_labels = np.asarray(nib.load(example_dataset['dseg']).dataobj)
    for prompt, (target, labels, _) in CHECKS.items():
        out = tmp_path_factory.mktemp('golden') / 'out'
        completed = subprocess.run(
            [*_voxelprompt(), 'run', '--prompt', prompt, str(example_dataset['T1w']), '-o', str(out),
             '--json', '--quiet', '--threads', '2', '--weights', str(REPO / 'weights')],
            capture_output=True, text=True, timeout=900)
        assert completed.returncode == 0, completed.stderr
        metrics = json.loads(completed.stdout)
        masks = [v for v in metrics['volumes'] if v['kind'] == 'mask']
        assert masks, f'no mask written; program: {[s["code"] for s in metrics["steps"]]}'
        record = next((m for m in masks if m['description'] == target), masks[0])
        predicted = np.asarray(nib.load(out / record['file']).dataobj) > 0
        runs[prompt] = (metrics, out, record, _dice(predicted, np.isin(reference_labels, labels)))
    return runs


@pytest.mark.slow
@pytest.mark.parametrize('prompt', list(CHECKS))
def test_golden_tissue_masks_on_the_example_scan(example_dataset, golden_runs, prompt):
    target, labels, floor = CHECKS[prompt]
    metrics, out, mask_record, dice = golden_runs[prompt]
    # every output file is there
    for name in ('metrics.json', 'script.py', 'report.html'):
        assert (out / name).is_file(), name
    assert mask_record['description'] == target, [s['code'] for s in metrics['steps']]
    assert (out / mask_record['file']).is_file() and (out / mask_record['qc']).is_file()
    assert f"segment(enc, '{target}', phi=PHI[" in (out / 'script.py').read_text()
    assert metrics['weights']['sha256'] and metrics['prompt'] == prompt
    # the mask lies on the input grid and overlaps the reference
    mask = nib.load(out / mask_record['file'])
    scan = nib.load(example_dataset['T1w'])
    assert mask.shape == scan.shape and np.allclose(mask.affine, scan.affine, atol=1e-5)
    print(f'\ngolden Dice ({prompt!r} vs the example labels {labels}): {dice:.4f}')
    assert dice >= floor


#: checks where the shipped network does not beat its baseline yet (measured with the golden
#: run below): strict xfail, so that the day it does, the test fails as XPASS and the entry
#: must go, making the assertion binding. Entries are only ever removed.
NOT_BEATEN_YET: dict[str, str] = {}


@pytest.mark.slow
@pytest.mark.parametrize('prompt', [
    pytest.param(p, marks=pytest.mark.xfail(strict=True, reason=NOT_BEATEN_YET[p]))
    if p in NOT_BEATEN_YET else p for p in CHECKS])
def test_the_model_beats_a_one_line_intensity_rule(example_dataset, golden_runs, prompt):
    _, labels, _ = CHECKS[prompt]
    t1 = np.asarray(nib.load(example_dataset['T1w']).dataobj).astype(np.float64)
    reference = np.isin(np.asarray(nib.load(example_dataset['dseg']).dataobj), labels)
    baseline = _dice(baseline_mask(prompt, t1), reference)
    dice = golden_runs[prompt][3]
    print(f'\n{prompt!r}: model {dice:.4f}, baseline ({BASELINES[prompt]}) {baseline:.4f}')
    assert dice > baseline


#: white matter on the example resampled to 2 x 2 x 5 mm (thick axial slices), against its
#: tissue map averaged onto that grid, through `voxelprompt run`: 0.8188 with the isotropic
#: working grid (docs/vision.md "Thick slices"), 0.4752 with the same weights and
#: `isotropic_working_grid` off (the network seeing the thick grid as it is)
THICK_WM_FLOOR = 0.818


@pytest.mark.slow
def test_a_thick_slice_scan_gets_its_white_matter_on_its_own_grid(example_dataset, tmp_path):
    import torch
    import voxel as vx
    thick_spacing = torch.tensor((2.0, 2.0, 5.0))
    t1 = vx.load_volume(str(example_dataset['T1w']))
    thick = t1.new(t1.tensor.float()).resample(thick_spacing, mode='linear', antialias=True)
    path = tmp_path / 'thick_T1w.nii.gz'
    vx.save_volume(thick, str(path))
    labels = vx.load_volume(str(example_dataset['dseg']))
    white = labels.new((labels.tensor == 2).float()).resample_like(
        thick.geometry, mode='linear', antialias=True).tensor[0].cpu().numpy() > 0.5
    out = tmp_path / 'out'
    completed = subprocess.run(
        [*_voxelprompt(), 'run', '--prompt', 'segment the white matter', str(path), '-o', str(out),
         '--json', '--quiet', '--threads', '2', '--weights', str(REPO / 'weights')],
        capture_output=True, text=True, timeout=900)
    assert completed.returncode == 0, completed.stderr
    metrics = json.loads(completed.stdout)
    record = next(v for v in metrics['volumes'] if v['kind'] == 'mask')
    assert record['description'] == 'bilateral cerebral white matter'
    mask = nib.load(out / record['file'])
    scan = nib.load(path)
    assert mask.shape == scan.shape and np.allclose(mask.affine, scan.affine, atol=1e-5)
    dice = _dice(np.asarray(mask.dataobj) > 0, white)
    print(f'\nthick-slice white matter Dice: {dice:.4f}')
    assert dice >= THICK_WM_FLOOR


def test_the_shipped_model_gives_every_plain_command_a_program():
    """Short commands a first-time user types ("segment the hippocampus") are neither refused
    nor left without a program by the shipped weights (a model trained mostly on sentences
    refused 4 of these 40; ``benchmarks/plain_prompts.py``)."""
    from vpcli.evaluate.paraphrases import plain_command_failures
    from vpcli.weights import load_bundle
    failures = plain_command_failures(load_bundle(REPO / 'weights'))
    assert [f for f in failures if f['miss'] != 'wrong'] == []
