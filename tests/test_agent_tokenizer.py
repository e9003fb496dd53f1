"""Tokenizer training is deterministic, round-trips exactly, and keeps special tokens atomic."""

from agent_corpus import corpus

from vpcli.agent.tokenizer import MOD, SPECIAL_TOKENS, STEP_END, train_tokenizer


def test_training_is_deterministic_and_round_trips(tmp_path):
    texts = corpus(seed=0, count=120)
    first = train_tokenizer(texts, tmp_path / 'a.model', vocab_size=500, seed=3)
    second = train_tokenizer(texts, tmp_path / 'b.model', vocab_size=500, seed=3)
    assert (tmp_path / 'a.model').read_bytes() == (tmp_path / 'b.model').read_bytes()
    for text in texts[:50] + ['x  =  1\n\n  é ü\n', "answer(f'{v:.1f} mL')\n"]:
        assert first.decode(first.encode(text)) == text
    step = "enc = encode(img0<MOD>, img1<MOD>)\n"
    ids = first.encode(step)
    assert ids.count(first[MOD]) == 2
    assert len({first[token] for token in SPECIAL_TOKENS}) == len(SPECIAL_TOKENS)
    assert first.surface(first[STEP_END]) == STEP_END
    assert ''.join(first.surface(i) for i in ids) == step
    assert len(second) == len(first)
