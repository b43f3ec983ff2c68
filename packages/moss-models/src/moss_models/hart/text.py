"""HART's text conditioning: Qwen2 hidden states of the prompt, padded to exactly ``context_token`` tokens.

What the official ``hart/utils/tools.py::encode_prompts`` computes (mit-han-lab/hart@e28a41f), for the default
``use_llm_system_prompt=True``:

* every prompt is tokenised on its own, truncated to ``context_token`` (300) tokens and padded to exactly that
  many with the tokenizer's pad token (on its own padding side); ``mask = ids != pad_token_id`` and the RoPE
  ``position_ids = cumsum(mask) − 1``;
* the fixed system prompt (:data:`SYSTEM_PROMPT`, tokenised unpadded) is prepended, the text model runs over
  ``[system ++ prompt]`` with the attention mask ``[ones ++ mask]``, and the last hidden state of the prompt's
  tokens (padding included: HART attends to them) is the context ``(B, 300, hidden)`` in fp32.

The text model is Qwen2 (``mit-han-lab/Qwen2-VL-1.5B-Instruct``, text only, hidden size 1536), loaded through
transformers from a local folder (:meth:`Qwen2TextEncoder.from_folder`, nothing is downloaded). For the embedded
``hart_tiny`` there is :func:`tiny_text_encoder`: a seeded random Qwen2 of the tiny context width with a tokenizer
that needs no files (:class:`WordHashTokenizer`), so the whole model runs on a CPU without a download; like every
random-weight model it carries no language understanding.
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

#: the official ``llm_system_prompt`` (``hart/utils/constants.py``), prepended to every prompt by default
SYSTEM_PROMPT = (
    'Given a user prompt, generate an "Enhanced prompt" that provides detailed visual descriptions suitable for '
    "image generation.\n\nExamples:\n- User Prompt: A cat sleeping -> A small, fluffy white cat curled up in a round "
    "shape, sleeping peacefully on a warm sunny windowsill, surrounded by pots of blooming red flowers.\n- User "
    "Prompt: A busy city street -> A bustling city street scene at dusk, featuring glowing street lamps, a diverse "
    "crowd of people in colorful clothing, and a double-decker bus passing by towering glass skyscrapers.\n\nPlease "
    "generate only the enhanced description for the prompt below and DO NOT include any additional sentences. Start "
    'your response with "Enhanced Prompt:".\n\nUser Prompt:\n'
)


class PromptTruncatedWarning(UserWarning):
    """A prompt had more tokens than HART's context takes; its end was cut off."""


@dataclass
class HARTTextBatch:
    """The text conditioning of a batch of prompts, as the transformer takes it."""

    features: (
        torch.Tensor
    )  # (B, T, context_dim) fp32: last hidden states of the prompt tokens (padding included)
    position_ids: torch.Tensor  # (B, T) int64: cumsum(mask) − 1
    mask: torch.Tensor  # (B, T) bool: not padding
    truncated: list[bool] = field(default_factory=list)  # per prompt: cut to T tokens

    @property
    def batch_size(self) -> int:
        return int(self.features.shape[0])

    def select(self, rows: slice) -> HARTTextBatch:
        return HARTTextBatch(
            self.features[rows], self.position_ids[rows], self.mask[rows], list(self.truncated[rows])
        )

    def to(self, device: torch.device | str) -> HARTTextBatch:
        return HARTTextBatch(
            self.features.to(device), self.position_ids.to(device), self.mask.to(device), list(self.truncated)
        )


def pad_ids(ids: list[int], length: int, pad_id: int, side: str) -> tuple[list[int], bool]:
    """``ids`` truncated on the right to ``length`` and padded to it on ``side`` (the official
    ``padding="max_length", truncation=True``); and whether it was truncated."""
    if side not in ("left", "right"):
        raise ValueError(f"padding side must be 'left' or 'right', got {side!r}")
    cut = len(ids) > length
    ids = list(ids[:length])
    pad = [pad_id] * (length - len(ids))
    return (pad + ids if side == "left" else ids + pad), cut


class WordHashTokenizer:
    """A tokenizer that needs no files, for random-weight models: each whitespace-separated, lower-cased word
    maps to ``1 + sha256(word) mod (vocab_size − 1)``; id 0 is padding. Called like a Hugging Face tokenizer on
    one text (``tok(text)["input_ids"]``)."""

    pad_token_id = 0
    padding_side = "right"

    def __init__(self, vocab_size: int):
        if vocab_size < 2:
            raise ValueError(f"vocab_size must be >= 2 (id 0 is padding), got {vocab_size}")
        self.vocab_size = vocab_size

    def _id(self, word: str) -> int:
        digest = hashlib.sha256(word.encode("utf-8")).digest()
        return 1 + int.from_bytes(digest[:8], "little") % (self.vocab_size - 1)

    def __call__(self, text: str, **_: Any) -> dict[str, list[int]]:
        return {"input_ids": [self._id(w) for w in text.lower().split()]}


class Qwen2TextEncoder:
    """A Qwen2 text model and its tokenizer, encoding prompts as the official ``encode_prompts`` does.

    ``model``: a transformers ``Qwen2Model`` (or anything returning ``hidden_states``); ``tokenizer``: a Hugging
    Face tokenizer or a :class:`WordHashTokenizer`. On CUDA the model runs under ``autocast(float16)`` as the
    release does; elsewhere in its own dtype.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        context_token: int = 300,
        system_prompt: str | None = SYSTEM_PROMPT,
        device: torch.device | str | None = None,
    ):
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.context_token = int(context_token)
        self.system_prompt = system_prompt
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        if getattr(tokenizer, "pad_token_id", None) is None:
            raise ValueError(
                "the text tokenizer has no pad_token_id; HART pads every prompt to its context length"
            )

    @classmethod
    def from_folder(
        cls, path: str | Path, *, device: torch.device | str = "cpu", context_token: int = 300, **kwargs
    ) -> Qwen2TextEncoder:
        """The text model and tokenizer of a local folder (e.g. ``Qwen2-VL-1.5B-Instruct``), nothing downloaded."""
        from transformers import AutoModel, AutoTokenizer

        path = Path(path)
        if not path.is_dir():
            raise FileNotFoundError(f"text encoder folder {path} does not exist (expected a Qwen2 folder)")
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        model = AutoModel.from_pretrained(path, local_files_only=True, dtype=torch.float32).to(device)
        return cls(model, tokenizer, context_token=context_token, device=device, **kwargs)

    @property
    def channels(self) -> int:
        return int(self.model.config.hidden_size)

    def _ids(self, text: str) -> list[int]:
        return list(self.tokenizer(text)["input_ids"])

    def tokenize(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor, list[bool]]:
        """``(B, T)`` ids and mask of the prompts, each padded to exactly ``T = context_token``."""
        side = getattr(self.tokenizer, "padding_side", "right")
        rows, cut = [], []
        for p in prompts:
            ids, was_cut = pad_ids(self._ids(p), self.context_token, self.tokenizer.pad_token_id, side)
            rows.append(ids)
            cut.append(was_cut)
        if any(cut):
            warnings.warn(
                f"prompts longer than HART's {self.context_token} context tokens are cut to {self.context_token} "
                "tokens (the end of the prompt is lost); moss records which ones",
                PromptTruncatedWarning,
                stacklevel=3,
            )
        ids = torch.tensor(rows, dtype=torch.long, device=self.device)
        return ids, ids != self.tokenizer.pad_token_id, cut

    @torch.no_grad()
    def encode(self, prompts: list[str], *, per_image: bool = False) -> HARTTextBatch:
        """The prompts' :class:`HARTTextBatch`. ``per_image`` runs the text model one prompt at a time (a batched
        GEMM may round differently with the batch size)."""
        if not prompts or not all(isinstance(p, str) for p in prompts):
            raise ValueError(f"prompts must be a non-empty list of strings, got {prompts!r:.200}")
        ids, mask, cut = self.tokenize(prompts)
        position_ids = torch.cumsum(mask, dim=1) - 1
        if per_image and len(prompts) > 1:
            feats = torch.cat([self._hidden(ids[i : i + 1], mask[i : i + 1]) for i in range(len(prompts))])
        else:
            feats = self._hidden(ids, mask)
        return HARTTextBatch(feats, position_ids, mask, cut)

    def _hidden(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b = ids.shape[0]
        if self.system_prompt:
            system = torch.tensor(self._ids(self.system_prompt)[: self.context_token], dtype=torch.long)
            system = system.to(ids.device).unsqueeze(0).repeat(b, 1)
            inputs = torch.cat((system, ids), dim=1)
            attention = torch.cat((torch.ones_like(system, dtype=mask.dtype), mask), dim=1)
        else:
            system, inputs, attention = ids[:, :0], ids, mask
        autocast = (
            torch.autocast("cuda", dtype=torch.float16)
            if ids.device.type == "cuda"
            else torch.autocast(ids.device.type, enabled=False)
        )
        with autocast:
            out = self.model(inputs, attention_mask=attention, output_hidden_states=True)
        return out.hidden_states[-1][:, system.shape[1] :].float()


def tiny_text_encoder(
    context_dim: int,
    context_token: int,
    *,
    seed: int = 0,
    device: torch.device | str = "cpu",
    vocab_size: int = 512,
) -> Qwen2TextEncoder:
    """A seeded random 2-layer Qwen2 of width ``context_dim`` with a :class:`WordHashTokenizer`: ``hart_tiny``'s
    text encoder, built without any file (the global RNG is left untouched)."""
    from transformers import Qwen2Config, Qwen2Model

    heads = 2 if context_dim % 4 == 0 else 1
    config = Qwen2Config(
        vocab_size=vocab_size, hidden_size=context_dim, intermediate_size=2 * context_dim, num_hidden_layers=2,
        num_attention_heads=heads, num_key_value_heads=1, max_position_embeddings=1024,
        attn_implementation="eager",
    )  # fmt: skip
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen2Model(config)
    return Qwen2TextEncoder(
        model.to(device), WordHashTokenizer(vocab_size), context_token=context_token, device=device
    )
