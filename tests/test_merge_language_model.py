"""scripts/merge_language_model.py: a language-model export gets the shipped vision
network and every manifest entry that describes it."""

import json
import runpy
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / 'scripts' / 'merge_language_model.py'


def _folder(path: Path, vision: bytes, **manifest) -> Path:
    path.mkdir()
    (path / 'vision.pt').write_bytes(vision)
    (path / 'agent.pt').write_bytes(b'agent of ' + path.name.encode())
    files = [{'file': 'agent.pt', 'role': 'agent', 'sha256': path.name, 'bytes': 1},
             {'file': 'vision.pt', 'role': 'vision', 'sha256': vision.hex(), 'bytes': len(vision)}]
    (path / 'manifest.json').write_text(json.dumps({'format': 1, 'files': files, **manifest}))
    return path


def test_the_export_keeps_its_language_model_and_takes_the_shipped_vision(tmp_path):
    new = _folder(tmp_path / 'new', b'small', steps=34000, vision_config={'name': 'small'},
                  data_sources=['synthetic'], evaluation={})
    shipped = _folder(tmp_path / 'shipped', b'dense', steps=32200, vision_config={'name': 'dense-cpu'},
                      vision_training={'steps': 24000}, data_sources=['fsaverage', 'GCA'],
                      evaluation={'suites': {'real': 0.72}})
    merged = runpy.run_path(str(SCRIPT))['merge'](new, shipped)
    assert (new / 'vision.pt').read_bytes() == b'dense'
    assert (new / 'agent.pt').read_bytes() == b'agent of new'
    on_disk = json.loads((new / 'manifest.json').read_text())
    assert on_disk == merged
    assert merged['steps'] == 34000                          # the language model's run
    assert merged['vision_config'] == {'name': 'dense-cpu'}
    assert merged['vision_training'] == {'steps': 24000}
    assert merged['data_sources'] == ['fsaverage', 'GCA']
    assert merged['evaluation'] == {'suites': {'real': 0.72}}
    roles = {entry['role']: entry for entry in merged['files']}
    assert roles['vision']['sha256'] == b'dense'.hex() and roles['agent']['sha256'] == 'new'
