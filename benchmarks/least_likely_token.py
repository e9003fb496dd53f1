"""How sure a training checkpoint's language model is of the target programs of two-scan
episodes, per task category.

For training-split episodes of each category whose case has two or more scans (described
cases, simulated feedback, drawn from ``default_rng([5, 6])``), the language model reads
the target program teacher-forced. Per episode the least likely target token is taken (its
probability under the model); printed per category: episodes, the mean of that
probability, and the share of episodes where it is above 0.5 (roughly, where greedy
decoding would write the whole program). With ``--worst`` the least likely tokens of each
episode are listed with the text before them.

    .venv/bin/python benchmarks/least_likely_token.py [--checkpoint weights/train-state/small-checkpoint.pt] \\
        [--categories intensity signal_intensity ...] [--draws 80] [--worst]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--checkpoint', default='weights/train-state/small-checkpoint.pt')
    parser.add_argument('--categories', nargs='+',
                        default=['intensity', 'signal_intensity', 'intensity_comparison', 'intensity_change'])
    parser.add_argument('--draws', type=int, default=80, help='episodes drawn per category (before the two-scan filter)')
    parser.add_argument('--worst', action='store_true', help='list the least likely tokens per episode')
    parser.add_argument('--threads', type=int, default=1)
    arguments = parser.parse_args()

    import numpy as np
    import torch

    from vpcli.agent.corpus import sample_episodes
    from vpcli.agent.episodes import encode_episode
    from vpcli.agent.model import AgentModel
    from vpcli.agent.tokenizer import Tokenizer

    torch.set_num_threads(arguments.threads)
    checkpoint = torch.load(arguments.checkpoint, map_location='cpu', weights_only=False)
    agent = checkpoint.get('agent', checkpoint)
    model = AgentModel.from_checkpoint(agent, any_model_text=True).eval()
    tokenizer = Tokenizer(agent['tokenizer'])
    print(f'checkpoint {arguments.checkpoint}, step {checkpoint.get("step", "?")}')
    for category in arguments.categories:
        rng = np.random.default_rng([5, 6])
        least = []
        for episode in sample_episodes(rng, arguments.draws, split='train', category=category):
            if len(episode.scan_lines) < 2:
                continue
            ids, trained, rows = encode_episode(tokenizer, episode, model.config.encoding_width, rng)
            with torch.no_grad():
                logits, _, _ = model(torch.tensor([ids]), torch.from_numpy(rows) if len(rows) else None)
            logp = torch.log_softmax(logits[0].float(), -1)
            scored = sorted((float(logp[i - 1, ids[i]]), i) for i in range(1, len(ids)) if trained[i])
            least.append(float(np.exp(scored[0][0])))
            if arguments.worst:
                shown = [f'{tokenizer.decode(ids[max(0, i - 6):i])!r} -> {tokenizer.decode([ids[i]])!r} '
                         f'{np.exp(p):.2f}' for p, i in scored[:3] if p < -0.1]
                print(f'  {category}: {episode.prompt[:60]!r}: ' + ('; '.join(shown) or 'all > 0.90'))
        least = np.array(least)
        print(f'{category}: {len(least)} two-scan episodes, least likely token: mean probability '
              f'{least.mean():.3f}, share above 0.5: {(least > 0.5).mean():.2f}')


if __name__ == '__main__':
    main()
