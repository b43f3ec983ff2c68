"""flan-t5-xl text encoding, packed as the official Infinity code packs it.

Prompts are tokenised to at most ``max_length`` tokens (512 for the release) with padding to that length, encoded
by ``T5EncoderModel``, and the valid rows of every prompt (EOS included) are concatenated into ``kv_compact``
``(N, C_t5)`` with ``lens`` and ``cu_seqlens``. For classifier-free guidance the unconditional rows are the learned
``cfg_uncond[:len_i]``, one block per prompt of the same length, after all conditional rows.
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F


def index_device(device: torch.device) -> torch.device:
    """Where the offsets live: with the features, except on the meta device (a dry run), where the loop must
    still read them: the CPU."""
    return torch.device("cpu") if device.type == "meta" else device


@dataclass
class TextBatch:
    kv_compact: torch.Tensor  # (N, C_t5) float32: every prompt's valid token features, concatenated
    lens: list[int]
    cu_seqlens: torch.Tensor  # (B + 1,) int32
    truncated: list[bool] = field(
        default_factory=list
    )  # per prompt: cut to the encoder's limit (empty: unknown)

    @classmethod
    def from_features(cls, features: list[torch.Tensor], truncated: list[bool] | None = None) -> TextBatch:
        """Pack per-prompt ``(len_i, C_t5)`` features."""
        if not features:
            raise ValueError("at least one prompt is needed")
        return cls.from_packed(torch.cat(features), [int(f.shape[0]) for f in features], truncated)

    @classmethod
    def from_packed(
        cls, kv_compact: torch.Tensor, lens: Sequence[int], truncated: list[bool] | None = None
    ) -> TextBatch:
        """Features already concatenated, ``(sum(lens), C_t5)``: the offsets come from ``lens`` on the host, so
        nothing is read back from the device."""
        lens = [int(n) for n in lens]
        if not lens:
            raise ValueError("at least one prompt is needed")
        if min(lens) < 1:
            raise ValueError(f"every prompt needs at least one token, got lengths {lens}")
        if kv_compact.shape[0] != sum(lens):
            raise ValueError(
                f"{kv_compact.shape[0]} feature rows for prompts of lengths summing to {sum(lens)}"
            )
        cu = F.pad(torch.tensor(lens, dtype=torch.int32).cumsum(0, dtype=torch.int32), (1, 0))
        return cls(kv_compact.float(), lens, cu.to(index_device(kv_compact.device)), list(truncated or []))

    def token_positions(self) -> list[int]:
        """Each packed row's position within its prompt (host side: ``0 … len_i − 1`` per prompt)."""
        return [j for n in self.lens for j in range(n)]

    @property
    def batch_size(self) -> int:
        return len(self.lens)

    @property
    def bounds(self) -> tuple[int, ...]:
        """``cu_seqlens`` computed on the host from ``lens`` (reading the device tensor would synchronise it)."""
        return tuple(itertools.accumulate(self.lens, initial=0))

    def select(self, index: int) -> torch.Tensor:
        a, b = self.bounds[index : index + 2]
        return self.kv_compact[a:b]

    def with_unconditional(self, cfg_uncond: torch.Tensor) -> TextBatch:
        """The CFG batch: conditional rows, then each prompt's ``cfg_uncond[:len_i]`` (official order)."""
        # one gather of the rows cfg_uncond[:len_i] of every prompt (not one slice per prompt)
        rows = torch.tensor(self.token_positions(), dtype=torch.long).to(cfg_uncond.device, non_blocking=True)
        uncond = cfg_uncond.index_select(0, rows).to(self.kv_compact)
        return TextBatch.from_packed(torch.cat([self.kv_compact, uncond]), self.lens + self.lens)

    def to(self, device: torch.device | str) -> TextBatch:
        return TextBatch(
            self.kv_compact.to(device),
            list(self.lens),
            self.cu_seqlens.to(index_device(torch.device(device))),
            list(self.truncated),
        )


class PromptTruncatedWarning(UserWarning):
    """A prompt had more tokens than the text encoder takes; its end was cut off."""


def warn_truncated(prompts: list[str], lengths: list[int], limit: int) -> list[bool]:
    """Which prompts exceed ``limit`` tokens (they are cut to it); warns once per call that cuts any."""
    cut = [n > limit for n in lengths]
    if any(cut):  # one text per limit, so Python's warning filter shows it once, not once per batch
        warnings.warn(
            f"prompts longer than the text encoder's {limit} tokens are cut to {limit} tokens (the end of the "
            "prompt is lost); moss records which ones (prompt_truncated in each image's record)",
            PromptTruncatedWarning,
            stacklevel=3,
        )
    return cut


class T5TextEncoder:
    """``T5EncoderModel`` + tokenizer from a local folder (e.g. a downloaded ``google/flan-t5-xl``).

    Loads with ``local_files_only=True``: nothing is fetched from a hub. Runs in fp16 on CUDA, as the release
    does, and fp32 elsewhere.
    """

    def __init__(
        self,
        path: str | Path,
        device: torch.device | str = "cpu",
        dtype: torch.dtype | None = None,
        max_length: int = 512,
    ):
        from transformers import AutoTokenizer, T5EncoderModel

        path = Path(path)
        if not path.is_dir():
            raise FileNotFoundError(
                f"text encoder folder {path} does not exist (expected a flan-t5-xl folder)"
            )
        device = torch.device(device)
        if dtype is None:
            dtype = torch.float16 if device.type == "cuda" else torch.float32
        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True, legacy=True)
        self.model = (
            T5EncoderModel.from_pretrained(path, local_files_only=True, dtype=dtype).to(device).eval()
        )
        self.device = device
        self.max_length = max_length

    @property
    def channels(self) -> int:
        return int(self.model.config.d_model)

    @torch.no_grad()
    def encode(self, prompts: list[str]) -> TextBatch:
        if not prompts or not all(isinstance(p, str) for p in prompts):
            raise ValueError(f"prompts must be a non-empty list of strings, got {prompts!r:.200}")
        tokens = self.tokenizer(
            prompts, max_length=self.max_length, padding="max_length", truncation=True, return_tensors="pt"
        )
        full = [len(t) for t in self.tokenizer(prompts, truncation=False)["input_ids"]]
        truncated = warn_truncated(prompts, full, self.max_length)
        ids, mask = tokens.input_ids.to(self.device), tokens.attention_mask.to(self.device)
        feats = self.model(input_ids=ids, attention_mask=mask)["last_hidden_state"].float()
        lens = mask.sum(-1).tolist()
        return TextBatch.from_features([feats[i, :n] for i, n in enumerate(lens)], truncated)


class HashedTextEncoder:
    """Deterministic stand-in text features for random-weight models (the CPU default needs no download).

    Each whitespace-separated word maps to a fixed unit-variance vector seeded by its SHA-256, plus an end token,
    so the same prompt always gives the same features and different prompts give different ones. It carries no
    language understanding and is meant only for models whose weights are random too.
    """

    def __init__(self, channels: int, max_length: int = 512, device: torch.device | str = "cpu"):
        self.channels = channels
        self.max_length = max_length
        self.device = torch.device(device)

    def _vector(self, token: str) -> torch.Tensor:
        import hashlib

        seed = int.from_bytes(hashlib.sha256(token.encode("utf-8")).digest()[:8], "little")
        gen = torch.Generator(device="cpu").manual_seed(seed)
        return torch.randn(self.channels, generator=gen)

    def encode(self, prompts: list[str]) -> TextBatch:
        if not prompts or not all(isinstance(p, str) for p in prompts):
            raise ValueError(f"prompts must be a non-empty list of strings, got {prompts!r:.200}")
        feats = []
        words = [p.lower().split() for p in prompts]
        truncated = warn_truncated(prompts, [len(w) + 1 for w in words], self.max_length)  # + the end token
        for w in words:
            tokens = [*w[: self.max_length - 1], "</s>"]
            feats.append(torch.stack([self._vector(t) for t in tokens]).to(self.device))
        return TextBatch.from_features(feats, truncated)
