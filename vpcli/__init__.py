"""voxelprompt: language-prompted brain image analysis from the command line.

The package is laid out by architecture:

- ``vpcli.volumes``    scans in, masks and images out (via ``voxel``), scan metadata
- ``vpcli.library``    the agent-callable function library (one registry)
- ``vpcli.sandbox``    where a program written by the agent (or a person) runs
- ``vpcli.agent``      where a prompt becomes a program, step by step
- ``vpcli.vision``     where pixels are made: the language-conditioned 3D network
- ``vpcli.tasks``      the task set, prompt templates and target programs
- ``vpcli.synth``      synthetic training scans and lesions
- ``vpcli.cli``        the ``voxelprompt`` command (thin)
"""

__version__ = '0.1.0'
