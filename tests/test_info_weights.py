"""`voxelprompt info` and weights-folder verification."""

from __future__ import annotations

import hashlib
import json

import pytest
from typer.testing import CliRunner

from vpcli.cli import app
from vpcli.errors import BadInputError
from vpcli.weights import resolve_weights_dir, verify_manifest


def test_info_json_is_pure_stdout(tmp_path):
    result = CliRunner().invoke(app, ['info', '--json', '--weights', str(tmp_path)])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report['versions']['voxelprompt']
    assert report['weights'] == {'folder': str(tmp_path), 'present': False}
    assert 'select_labels' in report['capabilities']['functions']['labels']


def test_weights_resolution_order(tmp_path, monkeypatch):
    monkeypatch.setenv('VOXELPROMPT_WEIGHTS', str(tmp_path / 'env'))
    assert resolve_weights_dir(tmp_path / 'cli') == tmp_path / 'cli'
    assert resolve_weights_dir(None) == tmp_path / 'env'
    monkeypatch.delenv('VOXELPROMPT_WEIGHTS')
    assert resolve_weights_dir(None).name == 'weights'


def test_manifest_checksums_are_verified(tmp_path):
    (tmp_path / 'model.pt').write_bytes(b'weights-bytes')
    digest = hashlib.sha256(b'weights-bytes').hexdigest()
    (tmp_path / 'manifest.json').write_text(json.dumps({'files': [{'file': 'model.pt', 'sha256': digest}]}))
    manifest = verify_manifest(tmp_path)
    assert len(manifest['weights_sha256']) == 64
    (tmp_path / 'model.pt').write_bytes(b'tampered')
    with pytest.raises(BadInputError, match='does not match'):
        verify_manifest(tmp_path)
    with pytest.raises(BadInputError, match='no manifest.json'):
        verify_manifest(tmp_path / 'nowhere')
