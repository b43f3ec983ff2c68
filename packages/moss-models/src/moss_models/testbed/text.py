"""A word-level text encoder over a closed vocabulary: learned embeddings in place of flan-t5.

Its output is what every Infinity text encoder gives the family: a :class:`~moss_models.infinity.text.TextBatch`
of per-prompt ``(len_i, text_channels)`` features (one row per word, then an end token, as the T5 and hashed
encoders pack them), so it feeds the same ``text_norm`` → attentive pool → cross-attention path. The embeddings
are trained with the transformer; the vocabulary is given as a word list (the dataset's), so this package does
not depend on where the captions come from.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch
from torch import nn

from moss_models.infinity.text import TextBatch, warn_truncated

END = "</s>"
UNKNOWN = "<unk>"
SPECIALS = (END, UNKNOWN)
#: every word a Shapes caption can contain, in the order of ``moss_eval.quality.shapes.vocabulary()`` (the ids of a
#: trained encoder depend on it). A copy, since moss-models does not depend on moss-eval;
#: tests/models/test_testbed_model.py asserts that the two are equal.
SHAPES_VOCABULARY: tuple[str, ...] = (
    "a", "an", "two", "three",
    "red", "orange", "yellow", "green", "blue", "purple",
    "circle", "square", "triangle", "star", "diamond",
    "circles", "squares", "triangles", "stars", "diamonds",
    "and", "left", "of", "right", "above", "below",
    "on", "plain", "striped", "checkered", "noisy", "background",
)  # fmt: skip
_SPLIT = re.compile(r"[A-Za-z0-9]+(?:[-'][A-Za-z0-9]+)*")  # words; punctuation and spaces separate them


def words_of(prompt: str) -> list[str]:
    """A prompt's words, lower-cased, without punctuation ("A red, big circle." → a, red, big, circle)."""
    return [w.lower() for w in _SPLIT.findall(prompt)]


class WordTextEncoder(nn.Module):
    """Prompts → one learned ``channels``-wide vector per word plus an end token.

    ``vocabulary``: every word a training caption uses (its order fixes the ids: ``</s>`` is 0, ``<unk>`` 1, the
    vocabulary from 2). A word outside it maps to ``<unk>`` (a prompt written by hand still generates), unless
    ``strict``, where it is an error (training captions must be covered). Prompts longer than ``max_length``
    tokens are cut, with the family's :class:`~moss_models.infinity.text.PromptTruncatedWarning`.
    """

    def __init__(
        self,
        vocabulary: Sequence[str],
        channels: int,
        max_length: int,
        *,
        strict: bool = False,
        device: torch.device | str = "cpu",
    ):
        super().__init__()
        words = [w.lower() for w in vocabulary]
        bad = [w for w in words if words_of(w) != [w]]
        if bad:
            raise ValueError(
                f"vocabulary entries must be single words (letters, digits, - or '), got {bad[:5]}"
            )
        if len(set(words)) != len(words):
            dup = sorted({w for w in words if words.count(w) > 1})
            raise ValueError(f"vocabulary has repeated words: {dup[:5]}")
        if max_length < 2:
            raise ValueError(f"max_length={max_length} must leave room for a word and the end token")
        self.vocabulary = tuple(words)
        self.ids = {w: i for i, w in enumerate((*SPECIALS, *words))}
        self.max_length = max_length
        self.strict = strict
        self.embedding = nn.Embedding(len(self.ids), channels, device=device)

    @property
    def channels(self) -> int:
        return self.embedding.embedding_dim

    @property
    def device(self) -> torch.device:
        return self.embedding.weight.device

    def token_ids(self, prompt: str) -> list[int]:
        """The ids of a prompt's words (cut to ``max_length − 1``) and the end token."""
        ids = []
        for w in words_of(prompt):
            if w not in self.ids and self.strict:
                raise ValueError(f"word {w!r} of prompt {prompt!r} is not in the vocabulary (strict encoder)")
            ids.append(self.ids.get(w, self.ids[UNKNOWN]))
        return [*ids[: self.max_length - 1], self.ids[END]]

    def encode(self, prompts: Sequence[str]) -> TextBatch:
        if not prompts or not all(isinstance(p, str) for p in prompts):
            raise ValueError(f"prompts must be a non-empty list of strings, got {prompts!r:.200}")
        truncated = warn_truncated(list(prompts), [len(words_of(p)) + 1 for p in prompts], self.max_length)
        ids = [torch.tensor(self.token_ids(p), dtype=torch.long, device=self.device) for p in prompts]
        flat = self.embedding(torch.cat(ids))  # one lookup for the batch, then split per prompt
        return TextBatch.from_features(list(flat.split([len(i) for i in ids])), truncated)
