"""Plain commands a first-time user types, and whether a language model refuses them.

The held-out paraphrase families are sentences ("hi, I need a segmentation of ... from
these images. cheers"); a model can do well on them and still refuse "segment the
hippocampus". This check runs 40 short in-scope prompts (the quick start's own among them)
through the gate and the model of each weights folder (dry run: no scans are read) and
prints each refusal or failure and the count per folder; every prompt should give a
program.

    .venv/bin/python benchmarks/plain_prompts.py weights [OTHER_WEIGHTS ...]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PROMPTS = (
    'segment the lateral ventricles', 'segment the left hippocampus', 'segment the hippocampus',
    'segment the thalamus', 'segment the ventricles', 'segment the cerebellum', 'segment the brainstem',
    'segment the putamen', 'segment the caudate', 'segment the amygdala', 'segment the corpus callosum',
    'segment the third ventricle', 'segment the fourth ventricle', 'segment the lesions',
    'segment the white matter hyperintensities', 'segment the right lateral ventricle',
    'segment the left lateral ventricle', 'segment the cortex', 'segment the frontal lobe',
    'what is the volume of the lateral ventricles?', 'what is the volume of the left hippocampus?',
    'volume of the ventricles', 'how big are the lateral ventricles?', 'segment the CSF',
    'segment the choroid plexus', 'skull strip the image', 'remove the skull', 'segment the intracranial volume',
    'segment the basal ganglia', 'segment the pallidum', 'segment the left lateral ventricles',
    'segment lateral ventricles', 'lateral ventricles', 'segment the lateral ventricle',
    'measure the hippocampal volume', 'crop to the brain', 'what is the total brain volume?',
    'segment the grey matter', 'segment the white matter', 'segment the brain')
SCAN_LINES = ['img0: T1w, date unknown, session 01']


def main() -> None:
    import torch

    from vpcli.agent.prompt_run import dry_run
    from vpcli.weights import load_bundle
    torch.set_num_threads(1)
    folders = sys.argv[1:] or ['weights']
    for folder in folders:
        agent = load_bundle(folder).agent
        failed = 0
        for prompt in PROMPTS:
            record, problem, status = dry_run(agent, prompt, SCAN_LINES, 0)
            if status != 'ok' or record.refused or not record.steps:
                failed += 1
                why = problem if status != 'ok' else (record.refusal_reason if record.refused else 'no program')
                print(f'{folder}: {prompt!r}: {why}')
        print(f'{folder}: {failed} of {len(PROMPTS)} plain prompts refused or without a program')


if __name__ == '__main__':
    main()
