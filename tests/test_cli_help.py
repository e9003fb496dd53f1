"""``voxelprompt --help`` and ``voxelprompt exec --help`` are instant: no torch import."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

CHECK = '''
import json, runpy, sys, time
started = time.monotonic()
sys.argv = {argv!r}
try:
    runpy.run_module('vpcli', run_name='__main__')
except SystemExit as done:
    code = done.code
heavy = sorted(m for m in ('torch', 'voxel', 'transformers', 'nibabel', 'numpy', 'scipy')
               if m in sys.modules)
print(json.dumps({{'code': code, 'heavy': heavy, 'seconds': time.monotonic() - started}}),
      file=sys.stderr)
'''


@pytest.mark.parametrize('argv', [['voxelprompt', '--help'], ['voxelprompt', 'exec', '--help']])
def test_help_imports_no_heavy_module(argv):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    started = time.monotonic()
    done = subprocess.run([sys.executable, '-c', CHECK.format(argv=argv)], capture_output=True,
                          text=True, env=env, timeout=60)
    wall = time.monotonic() - started
    report = json.loads(done.stderr.strip().splitlines()[-1])
    assert report['code'] in (0, None), done.stderr
    assert report['heavy'] == [], report
    assert 'Usage' in done.stdout
    if argv[-2] == 'exec':
        for option in ('--output', '--overwrite', '--json', '--quiet', '--step-timeout', '--seed'):
            assert option in done.stdout
    # the whole interpreter start + help, generously bounded for 2 shared cores
    assert wall < 10, wall
    assert report['seconds'] < 5, report
