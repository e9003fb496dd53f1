"""The language model α: a randomly initialised LLaMA decoder with a φ head and an ε projection.

- Token logits come from ``transformers``' :class:`LlamaForCausalLM` (paper App. A.1).
- φ (the vision network's conditioning, one vector per volume stream) is the final hidden
  state at each ``<MOD>`` position through Linear → SiLU (32 channels).
- Encodings ε that ``read`` hands back are projected to the model width and replace the
  input embeddings of ``<EMB>`` placeholder tokens (fed via ``inputs_embeds``).

Checkpoints are self-describing: ``{'config', 'state', 'tokenizer', 'model_text'}`` (the
tokenizer's ``.model`` bytes ride along so a checkpoint is enough to run; ``model_text`` is
the :data:`~vpcli.agent.model_text.MODEL_TEXT_VERSION` the model was trained to write, 1 when
absent); :meth:`AgentModel.load` rebuilds the model from the config and loads the state
strictly, and refuses a model trained for another model text.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch
from torch import nn


class IncompatibleModelText(ValueError):
    """A checkpoint trained to write another version of the model text."""


def trained_model_text(checkpoint: dict) -> int:
    """The model text version an agent checkpoint was trained to write (1 before the version
    was recorded)."""
    return checkpoint.get('model_text', 1)


def _cache_keyword() -> str:
    """``cache`` in newer transformers releases, ``past_key_values`` before."""
    import inspect

    from transformers.models.llama.modeling_llama import LlamaModel
    return 'cache' if 'cache' in inspect.signature(LlamaModel.forward).parameters \
        else 'past_key_values'


_CACHE_KEYWORD = _cache_keyword()

#: φ channels (paper App. A.1: fully-connected layer with 32 output channels and SiLU)
PHI_CHANNELS = 32


@dataclasses.dataclass
class AgentConfig:
    """Size of the language model.

    Attributes:
        vocab_size: Number of tokenizer pieces.
        hidden_size: Model width b.
        layers: Transformer layers.
        heads: Attention heads.
        mlp_size: Width of the feed-forward layer.
        max_positions: Longest episode in tokens.
        encoding_width: Width of the vision network's ε vectors.
        phi_channels: Width of φ.
    """
    vocab_size: int
    hidden_size: int = 192
    layers: int = 4
    heads: int = 6
    mlp_size: int = 512
    max_positions: int = 1024
    encoding_width: int = 96
    phi_channels: int = PHI_CHANNELS

    @classmethod
    def preset(cls, name: str, vocab_size: int, **overrides) -> 'AgentConfig':
        """``tiny`` (tests), ``small`` (CPU) or ``paper`` (d=512, 16 layers, 32 heads, MLP 1024)."""
        presets = {
            'tiny': dict(hidden_size=32, layers=2, heads=2, mlp_size=64, max_positions=512),
            'small': dict(hidden_size=192, layers=4, heads=6, mlp_size=512, max_positions=1024),
            'paper': dict(hidden_size=512, layers=16, heads=32, mlp_size=1024, max_positions=2048),
        }
        if name not in presets:
            raise ValueError(f'unknown agent config {name!r}; expected one of {sorted(presets)}')
        return cls(vocab_size=vocab_size, **{**presets[name], **overrides})


class AgentModel(nn.Module):
    """LLaMA causal language model with the φ head and the ε feedback projection."""

    def __init__(self, config: AgentConfig, embedding_token_id: int | None = None,
                 mod_token_id: int | None = None):
        super().__init__()
        from transformers import LlamaConfig, LlamaForCausalLM

        self.config = config
        self.embedding_token_id = embedding_token_id
        self.mod_token_id = mod_token_id
        llama_config = LlamaConfig(
            vocab_size=config.vocab_size, hidden_size=config.hidden_size,
            intermediate_size=config.mlp_size, num_hidden_layers=config.layers,
            num_attention_heads=config.heads, num_key_value_heads=config.heads,
            max_position_embeddings=config.max_positions, tie_word_embeddings=False,
            bos_token_id=1, eos_token_id=2, pad_token_id=3)
        llama_config._attn_implementation = 'sdpa'
        self.llama = LlamaForCausalLM(llama_config)
        self.phi_head = nn.Sequential(nn.Linear(config.hidden_size, config.phi_channels), nn.SiLU())
        self.feedback_projection = nn.Linear(config.encoding_width, config.hidden_size)

    def embed(self, input_ids: torch.Tensor, encodings: torch.Tensor | None = None) -> torch.Tensor:
        """Input embeddings with each ``<EMB>`` position replaced by a projected ε row.

        Args:
            input_ids: Token ids, shape (batch, length).
            encodings: ε rows in order of the ``<EMB>`` positions (row-major over the
                batch), shape (count, encoding_width); None when there are none.
        """
        embeddings = self.llama.get_input_embeddings()(input_ids)
        if self.embedding_token_id is None:
            return embeddings
        slots = input_ids == self.embedding_token_id
        count = int(slots.sum())
        if count:
            if encodings is None or encodings.shape[0] != count:
                got = 0 if encodings is None else encodings.shape[0]
                raise ValueError(f'{count} <EMB> tokens but {got} encodings')
            projected = self.feedback_projection(encodings.to(embeddings.dtype))
            embeddings = embeddings.masked_scatter(slots.unsqueeze(-1), projected)
        return embeddings

    def forward(self, input_ids: torch.Tensor, encodings: torch.Tensor | None = None,
                attention_mask: torch.Tensor | None = None, past_key_values: Any = None,
                use_cache: bool = False):
        """Logits and final hidden states.

        Returns:
            ``(logits (batch, length, vocab), hidden (batch, length, width), past_key_values)``.
        """
        embeddings = self.embed(input_ids, encodings)
        past_length = 0 if past_key_values is None else past_key_values.get_seq_length()
        positions = torch.arange(past_length, past_length + input_ids.shape[1],
                                 device=input_ids.device).unsqueeze(0)
        output = self.llama.model(inputs_embeds=embeddings, attention_mask=attention_mask,
                                  position_ids=positions, use_cache=use_cache,
                                  **{_CACHE_KEYWORD: past_key_values})
        hidden = output.last_hidden_state
        logits = self.llama.lm_head(hidden)
        if not use_cache:
            return logits, hidden, None
        return logits, hidden, getattr(output, _CACHE_KEYWORD)

    def phi(self, hidden: torch.Tensor) -> torch.Tensor:
        """φ from hidden states at ``<MOD>`` positions: (..., width) -> (..., 32)."""
        return self.phi_head(hidden)

    def checkpoint(self, tokenizer_bytes: bytes | None = None) -> dict:
        """The self-describing checkpoint dictionary."""
        from vpcli.agent.model_text import MODEL_TEXT_VERSION
        return {'config': dataclasses.asdict(self.config), 'state': self.state_dict(),
                'special': {'embedding': self.embedding_token_id, 'mod': self.mod_token_id},
                'tokenizer': tokenizer_bytes, 'model_text': MODEL_TEXT_VERSION}

    def save(self, path: Path | str, tokenizer_bytes: bytes | None = None) -> None:
        """Write the checkpoint (atomically)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(path.name + '.tmp')
        torch.save(self.checkpoint(tokenizer_bytes), temporary)
        temporary.replace(path)

    @classmethod
    def from_checkpoint(cls, checkpoint: dict, any_model_text: bool = False) -> 'AgentModel':
        """Rebuild from a checkpoint dictionary (strict state loading).

        Raises:
            IncompatibleModelText: the model was trained to write another model text (unless
                ``any_model_text``, for training that continues under the current one).
        """
        from vpcli.agent.model_text import MODEL_TEXT_VERSION
        version = trained_model_text(checkpoint)
        if version != MODEL_TEXT_VERSION and not any_model_text:
            raise IncompatibleModelText(
                f'trained for model text version {version}, but this voxelprompt writes '
                f'version {MODEL_TEXT_VERSION} (where segment\'s <MOD> markers sit); use weights '
                f'exported by this release')
        special = checkpoint.get('special', {})
        model = cls(AgentConfig(**checkpoint['config']), embedding_token_id=special.get('embedding'),
                    mod_token_id=special.get('mod'))
        model.load_state_dict(checkpoint['state'], strict=True)
        return model

    @classmethod
    def load(cls, path: Path | str, device: str = 'cpu') -> 'AgentModel':
        """Load a checkpoint written by :meth:`save`."""
        checkpoint = torch.load(path, map_location=device, weights_only=True)
        return cls.from_checkpoint(checkpoint).to(device)
