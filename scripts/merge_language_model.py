"""Put a newly exported language model beside the shipped dense vision network.

The language model trains under the `small` recipe, whose export also writes that
recipe's own small vision network; the shipped weights pair the language model with the
dense network of a `dense-cpu*` run (docs/training.md). This script writes, into the
language-model export folder ``NEW``, the vision file of ``SHIPPED`` and every manifest
entry that describes it (``vision_config``, ``vision_training``, ``data_sources`` and the
vision file's checksum), and keeps ``SHIPPED``'s evaluation block, so that the folder is
one the CLI loads and `voxelprompt eval --record` re-records.

    .venv/bin/python scripts/merge_language_model.py NEW [--shipped weights]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

#: manifest keys that describe the vision network (or its training data) of a folder
VISION_KEYS = ('vision_config', 'vision_training', 'data_sources', 'evaluation')


def merge(new: Path, shipped: Path) -> dict:
    """Copy ``shipped``'s vision network and its manifest entries into ``new``; returns
    the merged manifest (written atomically to ``new/manifest.json``)."""
    from vpcli.volumes import write_text_atomic
    from vpcli.weights import read_manifest
    ours, theirs = read_manifest(new), read_manifest(shipped)
    vision = [entry for entry in theirs['files'] if entry['role'] == 'vision']
    if len(vision) != 1:
        raise SystemExit(f'{shipped}/manifest.json: expected one vision file, found {len(vision)}')
    shutil.copyfile(shipped / vision[0]['file'], new / vision[0]['file'])
    ours['files'] = [entry for entry in ours['files'] if entry['role'] != 'vision'] + vision
    for key in VISION_KEYS:
        if key in theirs:
            ours[key] = theirs[key]
    write_text_atomic(new / 'manifest.json', json.dumps(ours, indent=2) + '\n')
    return ours


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('new', type=Path, help='export folder of the language-model run')
    parser.add_argument('--shipped', type=Path, default=Path('weights'))
    args = parser.parse_args()
    merge(args.new, args.shipped)
    from vpcli.weights import load_bundle
    load_bundle(args.new)      # verifies every checksum and that the two networks pair
    print(f'{args.new}: its language model beside the vision network of {args.shipped}; it loads')


if __name__ == '__main__':
    main()
