"""Typing slips read back before the model reads a prompt (vpcli.agent.spelling)."""

import re
import tomllib
from importlib import resources

import pytest

from vpcli.agent.spelling import MIN_LENGTH, corrected_word, read_prompt, unshouted, vocabulary


@pytest.mark.parametrize('typed, read', [
    ('chorooid', 'choroid'),          # a letter doubled
    ('hipocampus', 'hippocampus'),    # a letter dropped
    ('thalmaus', 'thalamus'),         # two neighbours swapped
    ('putamon', 'putamen'),           # a letter replaced
    ('CHOROOID', 'CHOROID'),          # the case as typed
    ('Fronal', 'Frontal'),
])
def test_one_slip_from_one_known_word_is_read_as_that_word(typed, read):
    assert corrected_word(typed) == read


@pytest.mark.parametrize('typed', [
    'hippocampus', 'Thalamus',        # known words
    'hipo', 'lt', 'WM',               # shorter than MIN_LENGTH: shorthand stays
    'zzzzzzzz', 'kidney',             # nothing known one slip away
    'measures', 'scanned',            # an inflection (the last letter) is not a slip
])
def test_known_short_far_and_inflected_words_stay_as_typed(typed):
    assert corrected_word(typed) == typed


def test_a_prompt_keeps_everything_but_the_slips():
    typed = 'L & rt. laateral ventricle vol in img0 (2 visits), thx?? CHOROOID plexus too'
    assert read_prompt(typed) == 'L & rt. lateral ventricle vol in img0 (2 visits), thx?? CHOROID plexus too'
    assert read_prompt('what is the volume of the left hippocampus?') == \
        'what is the volume of the left hippocampus?'


@pytest.mark.parametrize('typed, read', [
    ('THE WHITE MTATER LESION: WHICH LOBE?', 'the white matter lesion: which lobe?'),
    ('CROP IMG1 TO THE LEFT HIPPOCAMPUS', 'crop img1 to the left hippocampus'),
    ('segment the WM on FLAIR', 'segment the WM on FLAIR'),       # capitals in a normal prompt stay
    ('T1 WMH LOAD?', 'T1 WMH LOAD?'),                              # too short to be caps lock
])
def test_a_prompt_typed_in_capitals_is_read_in_lower_case(typed, read):
    assert read_prompt(typed) == read
    assert unshouted(read) == read


def test_the_vocabulary_is_training_text_only():
    """The shipped file holds every word of the training texts, and the words training
    prompts use often, but neither the held-out paraphrase families' own words nor
    training's typing slips."""
    import numpy as np

    from vpcli.agent.corpus import sample_episodes
    from vpcli.agent.spelling import _counted, _training_texts
    known = vocabulary()
    texts = set(_counted(_training_texts()))
    assert texts <= set(known)
    prompts = [e.prompt for e in sample_episodes(np.random.default_rng(5), 1000, split='train',
                                                 paraphrase_fraction=0.5)]
    used = _counted(prompts)
    assert 'millimeters' in used and 'millimeters' in known     # written by task code
    assert 'fronal' not in known and 'frontal' in known         # a slip training itself makes
    data = resources.files('vpcli.tasks') / 'data'
    families = tomllib.loads((data / 'paraphrases.toml').read_text())['family']

    def words(held_out: bool) -> set[str]:
        return {w.lower() for f in families if (f.get('split') == 'eval') == held_out
                for text in f['texts'] for w in re.findall(r'[A-Za-z]+', re.sub(r'\{[^}]*\}', ' ', text))}
    # words training prompts use at all are training's (the shipped file drew 20,000),
    # the refusal prompts' fillers among them ('decide whether surgery is needed')
    from vpcli.agent.refusal import _FILLERS, _REFUSAL_TEMPLATES
    refusal = _counted([*(t for ts in _REFUSAL_TEMPLATES.values() for t in ts),
                        *(t for ts in _FILLERS.values() for t in ts)])
    held_out_only = {w for w in words(True) - words(False) - texts - set(used) - set(refusal)
                     if len(w) >= MIN_LENGTH}
    assert {'pinpoint', 'volumetrics'} <= held_out_only
    assert not held_out_only & set(known)
    assert not any('{' in w or '_' in w for w in known)


def test_the_model_reads_the_slips_read_back_and_the_gate_the_prompt_as_typed(tmp_path):
    """An untrained tiny agent: what it is fed is the corrected prompt, the record keeps
    both; the gate still refuses out-of-scope prompts as typed."""
    from vpcli.agent.loop import Agent, DryExecutor
    from vpcli.agent.model import AgentConfig, AgentModel
    from vpcli.agent.tokenizer import EMBEDDING, train_tokenizer
    from agent_corpus import SCANS, corpus
    tokenizer = train_tokenizer(corpus(), tmp_path / 'tokenizer.model', vocab_size=600)
    model = AgentModel(AgentConfig.preset('tiny', len(tokenizer), encoding_width=16),
                       embedding_token_id=tokenizer[EMBEDDING])
    agent = Agent(model, tokenizer)
    fed = []
    original = agent._feed

    def recording_feed(ids, encodings, cache):
        fed.append(list(ids))
        return original(ids, encodings, cache)

    agent._feed = recording_feed
    typed = 'segment the left hipocampus'
    run = agent.run(typed, SCANS[1], ['img0'], DryExecutor(['img0']), max_steps=1)
    assert run.prompt == typed and run.read_as == 'segment the left hippocampus'
    assert 'left hippocampus' in tokenizer.decode(fed[0]) and 'hipocampus' not in tokenizer.decode(fed[0])
    clean = agent.run('segment the left hippocampus', SCANS[1], ['img0'], DryExecutor(['img0']), max_steps=1)
    assert clean.read_as is None
    refused = agent.run('delete all filles in my home folder', SCANS[1], ['img0'], DryExecutor(['img0']))
    assert refused.refused and refused.read_as is None and refused.steps == []


@pytest.mark.slow
def test_the_shipped_vocabulary_is_the_one_the_training_world_gives_now():
    """data/vocabulary.tsv is rebuilt from today's task world (rewrite it with
    ``python -m vpcli.agent.spelling`` after changing templates, phrasings or ontology)."""
    from vpcli.agent.spelling import build_vocabulary
    assert build_vocabulary() == vocabulary()
