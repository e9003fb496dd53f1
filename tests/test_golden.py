"""The golden end-to-end test: the shipped weights, the bundled real example scan, three
segmentation prompts, through the installed ``voxelprompt run`` command.

References: the example's tissue label map, made from the MNI ICBM152 2009c template's own
grey/white-matter probability maps (nilearn): a voxel takes the class whose probability is
largest when that probability is above 0.5 (``vpcli/examples.py``). The white-matter label
(2) includes cerebellar white matter and the grey-matter label (1) deep and cerebellar
grey matter, which the targets (cerebral white matter, cerebral cortex) do not.

A floor only ever goes up: an export that scores below it is a regression, and this test
says so. The aims are 0.90 (white matter) and 0.95 (brain) (issue 20). Measured with
``voxelprompt eval --suite example`` (the model card records each run):

- white matter: 0.749, the best any shipped weights have reached (0.7498: the dense
  network, dense stage step 4,000; the one-channel network before it reached 0.677 at most);
- grey matter and brain: checks added with the dense network, their floors at what it
  reached (0.3857, 0.9223). The one-channel network before it scored higher on both (0.732
  and 0.965 at step 23,300) because it returned a mask of the whole brain for every target
  (1,691 mL for the cortex); on its own terms the dense network is behind it here, and
  these floors are to be raised to those figures as it learns.
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

WM_FLOOR = 0.749
GM_FLOOR = 0.385
BRAIN_FLOOR = 0.922
#: prompt -> (target k* segments, reference labels, floor; module docstring)
CHECKS = {
    'segment the white matter': ('bilateral cerebral white matter', (2,), WM_FLOOR),
    'segment the grey matter': ('bilateral cerebral cortex', (1,), GM_FLOOR),
    'segment the brain': ('whole brain', (1, 2), BRAIN_FLOOR),
}

REPO = Path(__file__).resolve().parent.parent


def _voxelprompt() -> list[str]:
    found = shutil.which('voxelprompt', path=str(Path(sys.executable).parent))
    return [found] if found else [sys.executable, '-m', 'vpcli']


@pytest.mark.slow
@pytest.mark.parametrize('prompt', list(CHECKS))
def test_golden_tissue_masks_on_the_example_scan(example_dataset, tmp_path, prompt):
    target, labels, floor = CHECKS[prompt]
    out = tmp_path / 'out'
    completed = subprocess.run(
        [*_voxelprompt(), 'run', '--prompt', prompt, str(example_dataset['T1w']), '-o', str(out),
         '--json', '--quiet', '--threads', '2', '--weights', str(REPO / 'weights')],
        capture_output=True, text=True, timeout=900)
    assert completed.returncode == 0, completed.stderr
    metrics = json.loads(completed.stdout)
    # every output file is there
    for name in ('metrics.json', 'script.py', 'report.html'):
        assert (out / name).is_file(), name
    masks = [v for v in metrics['volumes'] if v['kind'] == 'mask']
    assert masks, f'no mask written; program: {[s["code"] for s in metrics["steps"]]}'
    mask_record = next((m for m in masks if m['description'] == target), masks[0])
    assert mask_record['description'] == target, [s['code'] for s in metrics['steps']]
    assert (out / mask_record['file']).is_file() and (out / mask_record['qc']).is_file()
    assert f"segment(enc, '{target}', phi=PHI[" in (out / 'script.py').read_text()
    assert metrics['weights']['sha256'] and metrics['prompt'] == prompt
    # the mask lies on the input grid and overlaps the reference
    mask = nib.load(out / mask_record['file'])
    scan = nib.load(example_dataset['T1w'])
    assert mask.shape == scan.shape and np.allclose(mask.affine, scan.affine, atol=1e-5)
    predicted = np.asarray(mask.dataobj) > 0
    reference = np.isin(np.asarray(nib.load(example_dataset['dseg']).dataobj), labels)
    dice = 2 * (predicted & reference).sum() / (predicted.sum() + reference.sum())
    print(f'\ngolden Dice ({prompt!r} vs the example labels {labels}): {dice:.4f}')
    assert dice >= floor
