"""Captured transformer passes: launch every kernel of a pass with one call, for every image of the same shape.

A pass of a next-scale model is a few thousand small kernels (Infinity-2B: about 74 per block, 32 blocks); at the
token counts of the early scales and of the MoSs stage the host cannot launch them as fast as the GPU runs them.
The shapes of a generation are fixed by the resolution, the batch, the method's plan and the prompts' token
counts, so each pass is captured once as a CUDA graph and replayed for every later image of that shape.

:class:`PassGraphs` holds, per *shape* (method, schedule, batch, CFG rows, the context's tensor shapes): the KV
cache, which must stay at one address, the context and the inputs of every pass as they were captured, and one
graph per pass. A generation of a known shape copies its context, each pass's input and its tokens' positions
into those tensors and replays; a new shape runs eagerly once and captures. The cache's lengths (host state the
replay does not touch) are set to what the captured pass left.

What a graph cannot hold is refused up front, with the reason: methods with per-generation hooks (the peers keep
state and draw random numbers inside the passes), ``keep=("hidden",)``, attention backends other than ``sdpa``,
and ``sa_impl="loop"`` (it groups tokens on the host).

Off a GPU, ``PassGraphs(capture="emulate")`` replays by re-running the captured call on the captured tensors:
the same bookkeeping without the driver, which is how the CPU tests check it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from typing import Any

import torch

from moss_models.core.kv_cache import KVCache
from moss_models.core.pass_spec import PassSpec

CAPTURE_MODES = ("cuda", "emulate")


def _leaves(obj: Any) -> Iterator[Any]:
    """Every tensor and host scalar inside a context (dataclasses, tuples, lists, dicts, plain objects), in a
    fixed order: two contexts of one shape yield matching sequences."""
    if isinstance(obj, torch.Tensor | int | float | str | bool) or obj is None:
        yield obj
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        for f in dataclasses.fields(obj):
            yield from _leaves(getattr(obj, f.name))
    elif isinstance(obj, tuple | list):
        for item in obj:
            yield from _leaves(item)
    elif isinstance(obj, dict):
        for key in sorted(obj, key=repr):
            yield key
            yield from _leaves(obj[key])
    elif hasattr(obj, "__dict__") and not callable(obj):
        yield from _leaves(vars(obj))


def tensors_of(obj: Any) -> Iterator[torch.Tensor]:
    """Every tensor inside a context, in a fixed order."""
    return (leaf for leaf in _leaves(obj) if isinstance(leaf, torch.Tensor))


def shape_signature(obj: Any) -> tuple:
    """What fixes the shapes of a generation's passes: every tensor's shape, dtype and device, and every host
    scalar (e.g. each prompt's token count)."""
    return tuple(
        (tuple(leaf.shape), leaf.dtype, str(leaf.device)) if isinstance(leaf, torch.Tensor) else leaf
        for leaf in _leaves(obj)
    )


def graph_refusal(method: Any, keep: Any, device: torch.device) -> str | None:
    """Why the passes of this generation cannot be captured, or None."""
    if device.type != "cuda":
        return f"CUDA graphs need a CUDA device; this model is on {device}"
    attention = method.attention
    if attention.backend != "sdpa":
        return f"attention backend {attention.backend!r} is not captured (only 'sdpa' is)"
    if attention.mode == "sa" and attention.sa_impl == "loop":
        return "sa_impl 'loop' groups the tokens by scale on the host, which a graph cannot replay"
    if "hidden" in keep:
        return 'keep=("hidden",) reads every block\'s output from Python, which a replayed graph does not run'
    return None


@dataclasses.dataclass
class _Pass:
    x: torch.Tensor
    spec: PassSpec
    out: torch.Tensor
    lengths: tuple[list[int], list[int]]  # the cache's lengths after the pass
    replay: Callable[[], None]


@dataclasses.dataclass
class _Shape:
    cache: KVCache
    context: Any = None
    passes: dict[int, _Pass] = dataclasses.field(default_factory=dict)
    pool: Any = None


class PassGraphs:
    """Captured passes by generation shape (see the module doc). One instance serves many generations."""

    def __init__(self, capture: str = "cuda"):
        if capture not in CAPTURE_MODES:
            raise ValueError(f"capture must be one of {CAPTURE_MODES}, got {capture!r}")
        self.capture = capture
        self._shapes: dict[tuple, _Shape] = {}
        self.captured = 0  # passes captured (a new shape)
        self.replayed = 0  # passes replayed (a known shape)

    def __len__(self) -> int:
        return len(self._shapes)

    def cache(self, key: tuple, allocate: Callable[[], KVCache]) -> KVCache:
        """The KV cache of a shape (allocated once: a graph reads and writes it at fixed addresses), emptied."""
        if key not in self._shapes:
            self._shapes[key] = _Shape(allocate())
        cache = self._shapes[key].cache
        cache.set_lengths([0] * len(cache.capacities))
        return cache

    def context(self, key: tuple, ctx: Any) -> Any:
        """The context the passes of this shape read: the first one seen, refilled with ``ctx``'s values."""
        shape = self._shapes[key]
        if shape.context is None:
            shape.context = ctx
        elif shape.context is not ctx:
            _copy_into(tensors_of(shape.context), tensors_of(ctx), "context")
        return shape.context

    def run(
        self, key: tuple, i: int, forward: Callable[[torch.Tensor, PassSpec], torch.Tensor], x, spec
    ) -> Any:
        """Pass ``i`` of a generation of shape ``key``: ``forward(x, spec)``, replayed if it was captured."""
        shape = self._shapes[key]
        cache = shape.cache
        captured = shape.passes.get(i)
        if captured is not None:
            _copy_into([captured.x], [x], "pass input")
            _copy_into(_positions(captured.spec), _positions(spec), "token positions")
            captured.replay()
            cache.set_lengths(*captured.lengths)
            self.replayed += 1
            return captured.out
        before = cache.lengths()
        out = forward(x, spec)  # the eager run: this image's result, and the warm-up the capture needs
        after = cache.lengths()
        cache.set_lengths(*before)
        shape.passes[i] = self._capture(shape, forward, x, spec, out, after)
        cache.set_lengths(*after)
        self.captured += 1
        return out

    def _capture(self, shape: _Shape, forward, x, spec: PassSpec, out, after) -> _Pass:
        spec.reset_memo()  # what the pass computes once (the RoPE angles) must be recomputed by the graph
        if self.capture == "emulate":
            static_out = out.clone()
            before = shape.cache.lengths()

            def replay() -> None:
                spec.reset_memo()
                shape.cache.set_lengths(*before)
                static_out.copy_(forward(x, spec))

            return _Pass(x, spec, static_out, after, replay)
        if shape.pool is None:
            shape.pool = torch.cuda.graph_pool_handle()
        torch.cuda.synchronize(x.device)
        graph = torch.cuda.CUDAGraph()
        # autocast's cache of cast weights must not keep tensors of the capture's private pool
        torch.clear_autocast_cache()
        autocast = torch.autocast(
            "cuda", dtype=torch.get_autocast_dtype("cuda"), enabled=torch.is_autocast_enabled("cuda"),
            cache_enabled=False,
        )  # fmt: skip
        with torch.cuda.graph(graph, pool=shape.pool), autocast:
            static_out = forward(x, spec)
        return _Pass(x, spec, static_out, after, graph.replay)


def _positions(spec: PassSpec) -> list[torch.Tensor]:
    return [spec.scale_ids, spec.rows, spec.cols]


def _copy_into(targets, sources, what: str) -> None:
    targets, sources = list(targets), list(sources)
    if len(targets) != len(sources):
        raise RuntimeError(f"captured {what} has {len(targets)} tensors, this generation {len(sources)}")
    for dst, src in zip(targets, sources, strict=True):
        if dst is src:
            continue
        if dst.shape != src.shape or dst.dtype != src.dtype:
            raise RuntimeError(
                f"captured {what} tensor {tuple(dst.shape)} {dst.dtype} cannot take {tuple(src.shape)} {src.dtype}"
            )
        dst.copy_(src)
