"""Does φ name the target? A probe from φ (and from the hidden state φ is read from) to the
target a program's ``segment`` names, fitted on training-split episodes and scored on
held-out ones.

For each episode (training split: ``--episodes`` segmentation episodes plus as many of
every category; held-out split: ``--held-out`` of each), the shipped language model reads
the target program teacher-forced; at every ``<MOD>`` marker after a segment target the
probe gets the key of that target (an anatomical target, or the lesion class of a lesion
description). Two probes, each an MLP (32 -> 128 -> targets) fitted full-batch with Adam:

* ``frozen φ``: on φ as the shipped φ head writes it;
* ``trained φ head``: on the hidden state, with a copy of the φ head trained too (the best
  φ a head on that hidden state could give).

Printed: training and held-out agreement, split into anatomical and lesion targets. Dense
vision networks take the target from the program's text because of these numbers
(docs/vision.md).

    .venv/bin/python benchmarks/phi_targets.py [--weights weights] [--episodes 3000] [--held-out 500]
"""

from __future__ import annotations

import argparse
import copy
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

#: a segment call's target text right before its <MOD> markers, in model text
SEGMENT_TARGET = re.compile(r"segment\(\s*\w+(?:\[\d+\])?\s*,\s*(['\"])(.*?)\1\s*$")


def marker_targets(steps, mod='<MOD>'):
    """Per <MOD> marker of an episode's steps, the segment target text, or None."""
    out = []
    for step in steps:
        pieces = step.split(mod)
        for index in range(len(pieces) - 1):
            match = SEGMENT_TARGET.search(pieces[index]) if pieces[index] else None
            if not pieces[index]:  # a run of markers (one per stream) shares the target
                out.append(out[-1] if out else None)
            else:
                out.append(match.group(2) if match else None)
    return out


def marker_bank(agent, episodes, chunk=16):
    """``(hidden (N, width), keys)`` at every segment marker, teacher-forced."""
    import numpy as np
    import torch

    from vpcli.agent.tokenizer import MOD
    from vpcli.agent.training import make_batch
    from vpcli.vision.targets import target_key

    model, tokenizer = agent.model, agent.tokenizer
    rows, keys = [], []
    episodes = [e for e in episodes if not e.refused]
    with torch.no_grad():
        for start in range(0, len(episodes), chunk):
            batch = episodes[start:start + chunk]
            ids, _, encodings = make_batch(tokenizer, batch, model.config.encoding_width,
                                           np.random.default_rng(0), model.config.max_positions)
            _, hidden, _ = model(ids, encodings)
            for row, episode in enumerate(batch):
                positions = (ids[row] == tokenizer[MOD]).nonzero().flatten().tolist()
                texts = marker_targets(episode.steps)
                if len(positions) != len(texts):
                    continue
                for position, text in zip(positions, texts):
                    if text is not None:
                        rows.append(hidden[row, position].float())
                        keys.append(target_key(text))
    return torch.stack(rows), keys


def probe(train, held, head, trainable, steps, seed=0):
    import torch
    from torch.nn import functional as F
    (x, keys), (xe, keys_e) = train, held
    targets = sorted(set(keys) | set(keys_e))
    index = {k: i for i, k in enumerate(targets)}
    y = torch.tensor([index[k] for k in keys])
    ye = torch.tensor([index[k] for k in keys_e])
    torch.manual_seed(seed)
    head = copy.deepcopy(head)
    classifier = torch.nn.Sequential(torch.nn.Linear(32, 128), torch.nn.SiLU(),
                                     torch.nn.Linear(128, len(targets)))
    parameters = list(classifier.parameters()) + (list(head.parameters()) if trainable else [])
    optimizer = torch.optim.Adam(parameters, lr=3e-3)
    for _ in range(steps):
        loss = F.cross_entropy(classifier(head(x)), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        train_ok = classifier(head(x)).argmax(1) == y
        held_ok = classifier(head(xe)).argmax(1) == ye
    return float(train_ok.float().mean()), held_ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--weights', default='weights')
    parser.add_argument('--episodes', type=int, default=3000)
    parser.add_argument('--held-out', type=int, default=500)
    parser.add_argument('--steps', type=int, default=600)
    parser.add_argument('--threads', type=int, default=1)
    args = parser.parse_args()

    import numpy as np
    import torch

    from vpcli.agent.corpus import sample_episodes
    from vpcli.agent.loop import Agent
    from vpcli.tasks.ontology import load_ontology

    torch.set_num_threads(args.threads)
    agent = Agent.load(Path(args.weights) / 'agent.pt')
    banks = {}
    for split, count, seed in (('train', args.episodes, 11), ('eval', args.held_out, 12)):
        rng = np.random.default_rng(seed)
        episodes = sample_episodes(rng, count, split=split, category='segmentation') + \
            sample_episodes(rng, count, split=split, refusal_fraction=0.0)
        started = time.perf_counter()
        banks[split] = marker_bank(agent, episodes)
        print(f'{split}: {len(banks[split][1])} segment markers, {len(set(banks[split][1]))} '
              f'targets ({time.perf_counter() - started:.0f} s)', flush=True)
    anatomy = torch.tensor([k in load_ontology().targets for k in banks['eval'][1]])
    head = agent.model.phi_head
    for name, trainable in (('frozen φ', False), ('trained φ head', True)):
        train_share, held_ok = probe(banks['train'], banks['eval'], head, trainable, args.steps)
        print(f'{name}: training agreement {train_share:.3f}; held-out {held_ok.float().mean():.3f} '
              f'of {len(held_ok)} (anatomy {held_ok[anatomy].float().mean():.3f} of '
              f'{int(anatomy.sum())}, lesion classes {held_ok[~anatomy].float().mean():.3f} of '
              f'{int((~anatomy).sum())})', flush=True)


if __name__ == '__main__':
    main()
