"""A word-level text encoder over a closed vocabulary: learned embeddings in place of flan-t5.

Its output is what every Infinity text encoder gives the family: a :class:`~moss_models.infinity.text.TextBatch`
of per-prompt ``(len_i, text_channels)`` features (one row per word, then an end token, as the T5 and hashed
encoders pack them), so it feeds the same ``text_norm`` → attentive pool → cross-attention path. The embeddings
are trained with the transformer; the vocabulary is given as a word list (the dataset's), so this package does
not depend on where the captions come from.

With ``layers > 0`` the embeddings get learned positions and pass through that many pre-norm
``torch.nn.TransformerEncoderLayer`` s, so each word's feature carries its context, as T5's do. Without them the
features are a bag of words: Infinity's cross-attention has no positions on the text side, so "a red circle and a
blue square" and "a blue circle and a red square" would be the same condition, and no amount of training could
bind colours to shapes (the first trained testbed, which had none, drew the right colours on the wrong shapes).
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


def check_context_layers(
    layers, heads: int, channels: int, *, prefix: str = "", check_heads: bool = True
) -> None:
    """Raise ``ValueError`` unless ``layers`` is an int >= 0 and ``heads`` divides ``channels`` (names in the
    message get ``prefix``: the spec calls them ``text_layers`` …). One check for the encoder and the spec."""
    if not isinstance(layers, int) or isinstance(layers, bool) or layers < 0:
        raise ValueError(f"{prefix}layers={layers!r}: expected an int >= 0")
    if check_heads and (heads < 1 or channels % heads):
        raise ValueError(f"{prefix}heads={heads} must be >= 1 and divide {prefix}channels={channels}")


class WordTextEncoder(nn.Module):
    """Prompts → one learned ``channels``-wide vector per word plus an end token.

    ``vocabulary``: every word a training caption uses (its order fixes the ids: ``</s>`` is 0, ``<unk>`` 1, the
    vocabulary from 2). A word outside it maps to ``<unk>`` (a prompt written by hand still generates), unless
    ``strict``, where it is an error (training captions must be covered). Prompts longer than ``max_length``
    tokens are cut, with the family's :class:`~moss_models.infinity.text.PromptTruncatedWarning`.

    ``layers``: contextual encoder layers (0: the bag of word embeddings; see the module docstring) of ``heads``
    attention heads and a ``4 × channels`` MLP, no dropout.
    """

    def __init__(
        self,
        vocabulary: Sequence[str],
        channels: int,
        max_length: int,
        *,
        layers: int = 0,
        heads: int = 2,
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
        check_context_layers(layers, heads, channels, check_heads=bool(layers))  # heads unused without layers
        self.layers, self.heads = layers, heads
        if layers:
            self.position = nn.Embedding(max_length, channels, device=device)
            layer = nn.TransformerEncoderLayer(
                channels, heads, 4 * channels, dropout=0.0, activation="gelu", batch_first=True,
                norm_first=True, device=device,
            )  # fmt: skip
            # no nested tensors: the padded batch is tiny, and the fast path would change numerics with the mode
            self.context = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)

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
        # the ids, the padding and the packing are laid out on the host and sent in one copy each: a training
        # batch of 256 prompts would otherwise pay a copy and a slice (and its backward) per prompt
        ids = [self.token_ids(p) for p in prompts]
        lens = [len(i) for i in ids]
        if not self.layers:  # one lookup for the batch, already packed
            flat = torch.tensor([t for row in ids for t in row], dtype=torch.long)
            return TextBatch.from_packed(
                self.embedding(flat.to(self.device, non_blocking=True)), lens, truncated
            )
        width = max(lens)
        padded = torch.tensor([row + [0] * (width - len(row)) for row in ids], dtype=torch.long)  # 0: masked
        pad = torch.arange(width)[None, :] >= torch.tensor(lens)[:, None]
        # the valid rows of the (B, L) output in order: the prompts' features concatenated
        keep = torch.tensor([i * width + j for i, n in enumerate(lens) for j in range(n)], dtype=torch.long)
        padded, pad, keep = (t.to(self.device, non_blocking=True) for t in (padded, pad, keep))
        positions = torch.arange(width, device=self.device)
        x = self.context(self.embedding(padded) + self.position(positions), src_key_padding_mask=pad)
        return TextBatch.from_packed(x.reshape(-1, x.shape[-1]).index_select(0, keep), lens, truncated)

    def start_context_as_identity(self) -> None:
        """Zero the positions and every layer's output projections: the encoder then returns exactly the word
        embeddings (a pre-norm layer adds its branches to the residual), so a bag-of-words export's embeddings
        can be loaded into it and trained on without changing what the trained model sees at the start."""
        if not self.layers:
            return
        with torch.no_grad():
            self.position.weight.zero_()
            for layer in self.context.layers:
                for lin in (layer.self_attn.out_proj, layer.linear2):
                    lin.weight.zero_()
                    lin.bias.zero_()
