"""How much φ varies between segmentation targets where the vision network reads it, and
where model text version 1 read it.

For prompts ``segment the TARGET`` on the bundled example scan, the language model of a
training checkpoint reads the episode up to and including the segment step
``roi = segment(enc, 'TARGET'<MOD>)`` (teacher-forced; the encode step's feedback empty).
The φ head is applied (a) at the segment ``<MOD>``, after the target text (model text
version 2: what the vision network gets) and (b) at the encoding argument ``enc``, before
the target text (where version 1 put the ``<MOD>``; there φ varied by ~3 % of its norm).
Printed per position: the mean φ norm and the mean pairwise distance between targets,
absolute and relative to the norm. A vision network can only tell targets apart by what
differs between their φ.

    .venv/bin/python benchmarks/phi_spread.py [--checkpoint weights/train-state/small-checkpoint.pt]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TARGETS = ('bilateral cerebral white matter', 'whole brain', 'bilateral lateral ventricle',
           'left hippocampus', 'bilateral cerebral cortex', 'right thalamus')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--checkpoint', default='weights/train-state/small-checkpoint.pt')
    parser.add_argument('--threads', type=int, default=2)
    args = parser.parse_args()

    import torch

    from vpcli.agent.model_text import to_model_text
    from vpcli.agent.tokenizer import (CODE_START, FEEDBACK_END, FEEDBACK_START, MOD, STEP_END,
                                       header_text)
    from vpcli.examples import write_example
    from vpcli.train import JointTrainer
    from vpcli.volumes import load_scans

    torch.set_num_threads(args.threads)
    trainer = JointTrainer.resume(args.checkpoint, change_recipe=True)  # any model text; not saved
    trainer.agent.eval()
    tokenizer, special = trainer.tokenizer, trainer.special
    with tempfile.TemporaryDirectory() as folder:
        line = load_scans([write_example(Path(folder))['T1w']])[0].describe()
    at_marker, at_encoding = [], []
    for target in TARGETS:
        ids = [tokenizer.bos_id] + tokenizer.encode(header_text(f'segment the {target}', [line])) + \
            [special[CODE_START]] + tokenizer.encode('enc = encode(img0<MOD>)\n') + \
            [special[STEP_END], special[FEEDBACK_START], special[FEEDBACK_END]]
        step = tokenizer.encode(to_model_text(f'roi = segment(enc, {target!r})', {'enc': 1}))
        marker = len(ids) + step.index(special[MOD])
        prefix = tokenizer.encode('roi = segment(enc')
        assert step[:len(prefix)] == prefix, 'the step does not tokenize through its prefix'
        encoding = len(ids) + len(prefix) - 1
        with torch.no_grad():
            _, hidden, _ = trainer.agent(torch.tensor([ids + step]), None)
            at_marker.append(trainer.agent.phi(hidden[0, marker]))
            at_encoding.append(trainer.agent.phi(hidden[0, encoding]))
    print(f'checkpoint {args.checkpoint} (step {trainer.step}); {len(TARGETS)} targets')
    for name, rows in (('at the segment <MOD> (after the target)', at_marker),
                       ('at the encoding argument (before the target)', at_encoding)):
        phi = torch.stack(rows)
        distances = torch.cdist(phi, phi)[~torch.eye(len(rows), dtype=torch.bool)]
        norm = float(phi.norm(dim=1).mean())
        print(f'φ {name}: mean norm {norm:.3f}; pairwise distance mean {float(distances.mean()):.3f}, '
              f'min {float(distances.min()):.3f}; mean distance / norm {float(distances.mean()) / norm:.3f}')


if __name__ == '__main__':
    main()
