"""Average the network weights of several dense-run checkpoints (Polyak / SWA-style averaging
of the last checkpoints of a run) into one checkpoint, then export it as usual:

    python scripts/average_checkpoints.py OUT_RUN/checkpoint.pt CKPT_A CKPT_B ... 
    voxelprompt train --recipe dense-cpu -o OUT_RUN --until 0 --export weights/

The result takes the last checkpoint's step, recipe and history and records the averaged
steps (``averaged_steps``, written into the weights manifest by the export). Optimizer
moments and the generator state are dropped: continuing from it is a warm restart.
"""
import sys
from pathlib import Path

import torch


def main(out: str, *paths: str) -> None:
    if len(paths) < 2:
        raise SystemExit('give the output checkpoint and at least two checkpoints to average')
    data = [torch.load(p, map_location='cpu', weights_only=True) for p in paths]
    last = dict(data[-1])
    last['state'] = {k: (sum(d['state'][k].float() for d in data) / len(data)).to(v.dtype)
                     if v.is_floating_point() else v for k, v in data[-1]['state'].items()}
    last['averaged_steps'] = [int(d['step']) for d in data]
    last.pop('optimizer', None)
    last.pop('generator', None)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    torch.save(last, out)
    print(f'{out}: weights averaged over steps {last["averaged_steps"]}')


if __name__ == '__main__':
    main(*sys.argv[1:])
