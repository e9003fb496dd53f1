"""Plain commands a first-time user types, and whether a language model refuses them.

The held-out paraphrase families are sentences ("hi, I need a segmentation of ... from
these images. cheers"); a model can do well on them and still refuse "segment the
hippocampus". This check runs the 40 short in-scope prompts of
``vpcli.evaluate.paraphrases.PLAIN_COMMANDS`` (the paraphrases suite counts them too)
through the gate and the model of each weights folder (dry run: no scans are read) and
prints each refusal, missing program or wrong program (another target or measurement)
and the counts per folder.

    .venv/bin/python benchmarks/plain_prompts.py weights [OTHER_WEIGHTS ...]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    import torch

    from vpcli.evaluate.paraphrases import PLAIN_COMMANDS, plain_command_failures
    from vpcli.weights import load_bundle
    torch.set_num_threads(1)
    folders = sys.argv[1:] or ['weights']
    for folder in folders:
        failures = plain_command_failures(load_bundle(folder))
        for failure in failures:
            why = ' '.join(failure['why'].split()) if failure['miss'] == 'wrong' else failure['why']
            print(f'{folder}: {failure["prompt"]!r}: {failure["miss"]}: {why}')
        refused = sum(f['miss'] != 'wrong' for f in failures)
        print(f'{folder}: {len(PLAIN_COMMANDS) - len(failures)} of {len(PLAIN_COMMANDS)} plain prompts right, '
              f'{refused} refused or without a program')

if __name__ == '__main__':
    main()
