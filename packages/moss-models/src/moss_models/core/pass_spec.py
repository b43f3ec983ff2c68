"""What one transformer pass attends to, and the hooks a method can place inside it.

:class:`PassSpec` is family-neutral: every token's scale and position on its scale's grid, the KV cache, the
attention setting, and the family's own position data (``rope``: Infinity's RoPE tables). A family's blocks route
each residual branch (self-attention, cross-attention, FFN) through :meth:`PassSpec.sublayer`, so a method can
change which tokens a sub-layer computes (FastVAR prunes tokens inside the blocks) without a copy of the block,
and run each group of blocks through :meth:`PassSpec.block_group`, so a method can change the tokens a whole
group computes on (FasterVAR's low-rank tokens per block chunk).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import torch

from moss_models.core.attention import AttentionSpec
from moss_models.core.kv_cache import KVCache

#: ``branch(x_tokens, index)``: the residual branch of a sub-layer (its output before the residual add) for the
#: tokens ``x_tokens`` ``(B, n, C)``, which are the pass's tokens at ``index`` ``(B, n)`` (None: all of them).
Branch = Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor]


@dataclass(frozen=True)
class SublayerSite:
    """Where a sub-layer hook is called: the layer, the branch kind (``sa``, ``ca``, ``ffn``) and the pass."""

    layer: int
    kind: str
    spec: PassSpec


#: ``run(x_tokens, index)``: the blocks of one group on the tokens ``x_tokens`` ``(R, n, C)``, placed at the
#: pass's positions ``index`` ``(R, n)`` (None: the pass's own tokens).
GroupRun = Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor]


@dataclass(frozen=True)
class GroupSite:
    """Where a block-group hook is called: the group, the layers it holds and the pass."""

    group: int
    layers: range
    spec: PassSpec


class BlockGroupHook(Protocol):
    """Called for every group of blocks (Infinity: block chunk) of every pass; returns its ``(R, N, C)`` output.

    The identity hook is ``return run(x, None)``.
    """

    def __call__(self, site: GroupSite, x: torch.Tensor, run: GroupRun) -> torch.Tensor: ...


class SublayerHook(Protocol):
    """Called for every residual branch of every block; returns the ``(B, N, C)`` branch output to add.

    The identity hook is ``return branch(x, None)``. A pruning hook gathers some tokens, calls
    ``branch(x_kept, index)`` and scatters the result back (filling the rest as it likes).
    """

    def __call__(self, site: SublayerSite, x: torch.Tensor, branch: Branch) -> torch.Tensor: ...


@dataclass
class PassSpec:
    """One forward pass: its tokens' scales and positions, the cache, how they attend, and the hooks.

    ``scale_ids`` ``(N,)`` and ``rows``/``cols`` ``(N,)`` or ``(B, N)`` place every token on its own scale's grid.
    ``cache`` is read by every layer; with ``append`` the pass's keys and values are written after it.
    ``causal_scale_mask`` (teacher forcing only) replaces the cache by a block-causal mask over the pass.
    ``layer_outputs``: called with ``(layer, hidden)`` after every block (intermediates on request).
    ``cfg_rows``: which CFG rows the pass carries (``all``, ``cond``, ``uncond``); ``batch``: the number of images.
    """

    scale_ids: torch.Tensor
    rows: torch.Tensor
    cols: torch.Tensor
    rope: object = None  # the family's position data (Infinity: moss_attention.RopeTables)
    scales: tuple[int, ...] = ()  # schedule indices of the scales the pass carries, in pass order
    cache: KVCache | None = None
    append: bool = False
    attention: AttentionSpec = field(default_factory=AttentionSpec)
    hook: SublayerHook | None = None
    group_hook: BlockGroupHook | None = None
    cfg_rows: str = "all"
    batch: int = 0
    layer_outputs: Callable[[int, torch.Tensor], None] | None = None
    causal_scale_mask: torch.Tensor | None = field(default=None, repr=False)
    # what a family computes once per pass and every layer reuses (e.g. the RoPE angles of its tokens); a
    # subset of the pass is a new spec with its own
    _memo: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def memo(self, key: str, compute: Callable[..., Any], *args: Any) -> Any:
        """``compute(self, *args)``, computed on the first call of the pass and reused by every later one."""
        if key not in self._memo:
            self._memo[key] = compute(self, *args)
        return self._memo[key]

    def reset_memo(self) -> None:
        """Forget what the pass computed once (a captured pass recomputes it from its inputs)."""
        self._memo.clear()

    @property
    def num_tokens(self) -> int:
        return int(self.scale_ids.shape[0])

    def sublayer(self, layer: int, kind: str, x: torch.Tensor, branch: Branch) -> torch.Tensor:
        """The branch output to add to the residual stream: the method's hook decides which tokens compute it."""
        if self.hook is None:
            return branch(x, None)
        return self.hook(SublayerSite(layer, kind, self), x, branch)

    def block_group(self, group: int, layers: range, x: torch.Tensor, run: GroupRun) -> torch.Tensor:
        """The output of one group of blocks: the method's group hook decides which tokens it runs on."""
        if self.group_hook is None:
            return run(x, None)
        return self.group_hook(GroupSite(group, layers, self), x, run)

    def run_blocks(self, blocks, layer_groups, x: torch.Tensor, ctx: Any) -> torch.Tensor:
        """The whole pass: ``blocks[layer](x, ctx, layer, spec)`` group by group through the group hook, block
        outputs to ``layer_outputs``, then the cache commit if the pass appended. Every family's transformer runs
        its blocks through this, so the hooks mean the same in every family."""

        def run(x_in: torch.Tensor, index: torch.Tensor | None, layers: range) -> torch.Tensor:
            sub = self.subset(index)  # the tokens at ``index``: their positions gathered
            for layer in layers:
                x_in = blocks[layer](x_in, ctx, layer, sub)
                if self.layer_outputs is not None and layer != layers[-1]:
                    # inside a group that a hook runs on other tokens (FasterVAR's projections) a block's output
                    # is not the pass's hidden state: none is kept for it
                    self.layer_outputs(layer, x_in if index is None else None)
            return x_in

        for group, layers in enumerate(layer_groups):
            x = self.block_group(
                group, layers, x, lambda x_in, index, layers=layers: run(x_in, index, layers)
            )
            if self.layer_outputs is not None:
                self.layer_outputs(layers[-1], x)  # the group's output, restored by its hook if it had one
        if self.cache is not None and self.append:
            self.cache.commit()
        return x

    def subset(self, index: torch.Tensor | None) -> PassSpec:
        """The spec of the tokens at ``index`` ``(B, n)`` of this pass (their positions gathered per image).

        A subset of a packed multi-scale pass would give every image its own scale ids, which the attention
        kernels do not take; it is refused.
        """
        if index is None:
            return self
        if index.ndim != 2:
            raise ValueError(f"a token subset index must be (B, n), got shape {tuple(index.shape)}")
        if len(self.scales) > 1:
            raise NotImplementedError("token subsets of a pass that packs several scales are not supported")
        b = index.shape[0]

        def gather(pos: torch.Tensor) -> torch.Tensor:
            pos = pos.expand(b, -1) if pos.ndim == 1 else pos
            return pos.gather(1, index)

        return replace(
            self, scale_ids=self.scale_ids[: index.shape[1]], rows=gather(self.rows), cols=gather(self.cols)
        )
