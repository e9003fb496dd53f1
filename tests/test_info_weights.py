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
    assert verify_manifest(str(tmp_path)) == manifest  # a string path works the same
    (tmp_path / 'model.pt').write_bytes(b'tampered')
    with pytest.raises(BadInputError, match='does not match'):
        verify_manifest(tmp_path)
    with pytest.raises(BadInputError, match='no manifest.json'):
        verify_manifest(tmp_path / 'nowhere')


def test_weights_for_another_model_text_are_refused_naming_the_file(tiny_weights, tmp_path):
    import shutil

    import torch

    from vpcli.weights import load_bundle, write_weights
    old = tmp_path / 'old'
    shutil.copytree(tiny_weights, old)
    checkpoint = torch.load(old / 'agent.pt', weights_only=True)
    assert checkpoint['model_text'] == 2
    del checkpoint['model_text']        # what weights trained before version 2 look like
    torch.save(checkpoint, old / 'agent.pt')
    manifest = json.loads((old / 'manifest.json').read_text())
    manifest['files'][0]['sha256'] = hashlib.sha256((old / 'agent.pt').read_bytes()).hexdigest()
    (old / 'manifest.json').write_text(json.dumps(manifest))
    with pytest.raises(BadInputError, match=r"agent\.pt: trained for model text version 1, but "
                                            r"this voxelprompt writes version 2"):
        load_bundle(old)
    assert json.loads((tiny_weights / 'manifest.json').read_text())['model_text'] == 2
    assert load_bundle(tiny_weights).agent is not None
