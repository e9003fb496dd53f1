"""The language model α that writes programs, one step at a time (DESIGN.md §2 "Agent loop").

- :mod:`vpcli.agent.tokenizer`: SentencePiece tokenizer with the episode's special tokens.
- :mod:`vpcli.agent.model`: LLaMA decoder + φ head + ε feedback projection.
- :mod:`vpcli.agent.decoding_grammar`: prefix recognizer of the program subset (constrained decoding).
- :mod:`vpcli.agent.model_text`: model text (``<MOD>`` markers) <-> executable code (``phi=PHI[k]``).
- :mod:`vpcli.agent.loop`: the plan–execute–feedback loop.
- :mod:`vpcli.agent.refusal`: the out-of-scope gate and refusal training prompts.
- :mod:`vpcli.agent.training`: code-only training (cross-entropy on target programs).

Importing this package is cheap; torch and transformers load with the submodules that need them.
"""
