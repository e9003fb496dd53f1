"""Average the network weights of several checkpoints of one run (Polyak / SWA-style
averaging of its last checkpoints) into one checkpoint, then export it as usual.

Dense vision runs (``voxelprompt train --recipe dense-cpu ...``): the network's weights.

    python scripts/average_checkpoints.py OUT_RUN/checkpoint.pt CKPT_A CKPT_B ...
    voxelprompt train --recipe dense-cpu -o OUT_RUN --until 0 --export weights/

Language-model runs (``--recipe small``): the language model's weights, and the vision
network's where they differ (the code refresh leaves it frozen, so it is usually one).

    python scripts/average_checkpoints.py OUT_RUN/checkpoint.pt CKPT_A CKPT_B ...
    voxelprompt train --recipe small -o OUT_RUN --until 0 --export WEIGHTS/

The result takes the last checkpoint's step, recipe, history and φ anchor and records the
averaged steps (``averaged_steps``, written into the weights manifest by the export). A
checkpoint that is itself an average (it records ``averaged_steps``) counts as the
checkpoints behind it: it is weighted by their number and its steps are recorded, so
averaging the shipped mean of three checkpoints with two new ones is the mean of all five
(up to the precision the average was saved in).
Optimizer moments and the generator state are dropped: continuing from it is a warm restart.
"""
import sys
from pathlib import Path

import torch


def _mean(states: list[dict], weights: list[int]) -> dict:
    last, total = states[-1], sum(weights)
    return {k: (sum(w * s[k].float() for s, w in zip(states, weights)) / total).to(v.dtype)
            if v.is_floating_point() else v for k, v in last.items()}


def _steps(checkpoint: dict) -> list[int]:
    """The steps a checkpoint stands for: those it averages, else its own."""
    return [int(step) for step in checkpoint.get('averaged_steps') or [checkpoint['step']]]


def main(out: str, *paths: str) -> None:
    if len(paths) < 2:
        raise SystemExit('give the output checkpoint and at least two checkpoints to average')
    data = [torch.load(p, map_location='cpu', weights_only=False) for p in paths]
    last = dict(data[-1])
    weights = [len(_steps(d)) for d in data]
    if 'agent' in last:  # a language-model run
        if any(d['agent']['config'] != last['agent']['config'] for d in data):
            raise SystemExit('the checkpoints hold language models of different shapes')
        last['agent'] = dict(last['agent'], state=_mean([d['agent']['state'] for d in data], weights))
        visions = [d['vision']['state'] for d in data]
        if any(not torch.equal(v[k], visions[-1][k]) for v in visions for k in v):
            last['vision'] = dict(last['vision'], state=_mean(visions, weights))
        last.pop('agent_optimizer', None)
        last.pop('vision_optimizer', None)
    else:
        last['state'] = _mean([d['state'] for d in data], weights)
        last.pop('optimizer', None)
        last.pop('generator', None)
    last['averaged_steps'] = [step for d in data for step in _steps(d)]
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    torch.save(last, out)
    print(f'{out}: weights averaged over steps {last["averaged_steps"]}')


if __name__ == '__main__':
    main(*sys.argv[1:])
