"""The family-neutral next-scale generator: it owns the order of a generation.

:class:`NextScaleGenerator` runs one loop for every family and method: conditioning and CFG rows, the KV cache
sized from what the method's plan caches, per-image RNG, the method's steps (full scales, a packed mixed-scale
pass, skipped scales), timing per stage, the decode, and the result. A family supplies the math
(:class:`~moss_models.core.family.ScaleFamily`), a method the choices (:class:`~moss_models.core.methods.Method`).
This is the only loop over scales in moss.
"""

from __future__ import annotations

import collections
import contextlib
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from moss_dispatch import trusted_values
from moss_models.core.family import ScaleFamily
from moss_models.core.graphs import PassGraphs, graph_refusal, shape_signature
from moss_models.core.kv_cache import KVCache
from moss_models.core.methods import Baseline, Method, RunInfo, method_by_name
from moss_models.core.pass_spec import PassSpec
from moss_models.core.sampling import SamplingConfig, make_generators
from moss_models.core.steps import Step, StepPlan, StepTokens
from moss_models.core.timing import StageClock

KEEP_OPTIONS = ("logits", "latents", "hidden")


@dataclass
class GenerationStats:
    tokens_per_pass: list[int]  # per image and CFG branch
    kv_cache_bytes: int  # allocated by the cache tensors (all layers, keys and values, CFG rows included)
    stage_seconds: dict[str, float]
    skipped_scales: tuple[int, ...] = ()

    @property
    def forward_passes(self) -> int:
        return len(self.tokens_per_pass)

    @property
    def tokens_processed(self) -> int:
        return sum(self.tokens_per_pass)


@dataclass
class StepOutput:
    """One pass of a generation: what it carried and drew, and the intermediates asked for with ``keep``."""

    step: Step
    tokens: StepTokens
    samples: torch.Tensor  # (B, N, ...) what the pass drew per token (Infinity: bits)
    logits: torch.Tensor | None = None  # raw head outputs of every CFG row the pass guided ("logits")
    latent: torch.Tensor | None = None  # the running sum after the pass ("latents")
    hidden: torch.Tensor | None = None  # hidden states after block ``hidden_layer`` ("hidden")


@dataclass
class GenerationResult:
    images: torch.Tensor | None  # (B, H, W, 3) uint8 RGB
    decoded: torch.Tensor | None  # (B, 3, H, W) float in [-1, 1]
    latent: torch.Tensor  # the final running sum, the decoder's input
    steps: list[StepOutput]
    stats: GenerationStats
    method: str = ""
    truncated: list[bool] = field(
        default_factory=list
    )  # per image: its prompt was cut to the encoder's limit

    @property
    def samples(self) -> list[torch.Tensor]:
        """Per pass: the ``(B, N, ...)`` samples (Infinity: bits)."""
        return [s.samples for s in self.steps]

    @property
    def logits(self) -> list[torch.Tensor] | None:
        return None if any(s.logits is None for s in self.steps) else [s.logits for s in self.steps]

    @property
    def latents(self) -> list[torch.Tensor] | None:
        return None if any(s.latent is None for s in self.steps) else [s.latent for s in self.steps]

    @property
    def hidden(self) -> list[torch.Tensor] | None:
        return None if any(s.hidden is None for s in self.steps) else [s.hidden for s in self.steps]

    @property
    def dispatch(self) -> Any:
        """The selection of the last packed pass (a :class:`~moss_dispatch.Dispatch` for MoSs), or None."""
        chosen = [s.tokens.selection for s in self.steps if s.step.kind == "packed"]
        return chosen[-1] if chosen else None


@dataclass
class PipelineOutput:
    """What calling a generator returns: PIL images, the stats and the full result."""

    images: list
    stats: GenerationStats
    result: GenerationResult = field(repr=False)


class NextScaleGenerator:
    """Generates images with one model family under any method.

    ``generate`` is the full interface (tensors in and out, intermediates on request); calling the generator is
    the notebook one: ``pipe(["a red fox"], method="k5", seed=0).images``.
    """

    def __init__(self, family: ScaleFamily, *, name: str | None = None, default_resolution: Any = None):
        self.family = family
        self.name = name or family.name
        self.default_resolution = default_resolution

    @property
    def device(self) -> torch.device:
        return self.family.device

    def __getattr__(self, item: str) -> Any:
        # The family's own helpers (config, transformer, vae, schedule, ...) are reachable from the generator.
        if item == "family":
            raise AttributeError(item)
        return getattr(self.family, item)

    # ------------------------------------------------------------------------------------------ notebook API

    def __call__(
        self,
        prompts: Any,
        method: str | Method = "off",
        seed: int = 0,
        *,
        seeds: Sequence[int] | None = None,
        resolution: Any = None,
        aspect_ratio: float = 1.0,
        graphs: bool = False,
        **sampling: Any,
    ) -> PipelineOutput:
        """Generate one image per prompt; image ``i`` gets ``seed + i`` unless ``seeds`` are given.

        ``method``: a name (``"off"``, ``"k2"`` … ``"k5"``, ``"skip1"``, ``"skip2"``) or a method object;
        ``graphs``: replay the passes as CUDA graphs (see :meth:`generate`);
        ``sampling``: :class:`SamplingConfig` fields (``cfg``, ``tau``, ``top_k``, ``top_p``, ``seeding``).
        """
        from PIL import Image

        if isinstance(prompts, str):
            prompts = [prompts]
        if isinstance(method, str):
            method = method_by_name(method, self.family.name)
        n = len(prompts) if isinstance(prompts, Sequence) else prompts.batch_size
        seeds = list(seeds) if seeds is not None else [seed + i for i in range(n)]
        result = self.generate(
            prompts, seeds, method=method, resolution=resolution or self.default_resolution,
            aspect_ratio=aspect_ratio, sampling=SamplingConfig(**sampling), graphs=graphs,
        )  # fmt: skip
        images = [Image.fromarray(img.cpu().numpy()) for img in result.images]
        return PipelineOutput(images, result.stats, result)

    # ------------------------------------------------------------------------------------------ the loop

    @torch.no_grad()
    def generate(
        self,
        conditions: Any,
        seeds: Sequence[int],
        *,
        method: Method | None = None,
        resolution: Any = None,
        aspect_ratio: float = 1.0,
        sampling: SamplingConfig | None = None,
        decode: bool = True,
        keep: Collection[str] = (),
        hidden_layer: int = -1,
        clock: Any = None,
        instrument: Callable[[int | None], contextlib.AbstractContextManager] | None = None,
        graphs: bool | PassGraphs = False,
    ) -> GenerationResult:
        """Generate one image per condition (prompt, label, or precomputed features).

        ``keep``: intermediates to return per pass (:data:`KEEP_OPTIONS`); ``hidden_layer``: the block whose
        output ``"hidden"`` keeps (negative counts from the last). ``clock``: a stage timer (``.stage(name)``
        context manager, ``.seconds``). ``instrument(i)``: a context manager entered around pass ``i`` (and
        ``None`` for the conditioning), e.g. a FLOP counter. ``graphs``: capture every transformer pass as a CUDA
        graph on the first generation of a shape and replay it for later ones (the generator keeps them; or a
        :class:`~moss_models.core.graphs.PassGraphs` of your own); refused, with the reason, where a graph cannot
        hold the pass.
        """
        family = self.family
        method = method or Baseline()
        sampling = sampling or SamplingConfig()
        unknown = set(keep) - set(KEEP_OPTIONS)
        if unknown:
            raise ValueError(f"keep must name some of {KEEP_OPTIONS}, got {sorted(unknown)}")
        resolution = resolution if resolution is not None else self.default_resolution
        device = family.device
        dry = device.type == "meta"
        clock = clock or StageClock(device)
        instrument = instrument or (lambda _i: contextlib.nullcontext())
        per_image = sampling.per_image

        # Everything is checked before the first pass: the loop itself never reads a value back to the host.
        cond = family.condition(conditions, per_image=per_image)
        batch = cond.batch_size
        if len(seeds) != batch:
            raise ValueError(f"seeds has {len(seeds)} entries for {batch} prompts; give one seed per image")
        schedule = family.schedule(resolution, aspect_ratio)
        plan = method.plan(schedule.grids)
        plan.check_rows()
        # A pass on the unconditional rows (FasterVAR's guidance weight 0) needs them even when nothing is guided.
        guidance = family.uses_guidance(sampling, schedule) or plan.needs_unconditional
        attention = method.attention.for_dry_run() if dry else method.attention
        rows = 2 * batch if guidance else batch
        positions = family.positions(schedule)
        generators = None if dry else make_generators(list(seeds), sampling.seeding, device)
        hooks = method.pass_hooks(
            RunInfo(
                plan, tuple(tuple(g) for g in schedule.grids), tuple(seeds), batch, guidance, family.name, device,
                num_layers=_num_layers(family), layer_groups=family.layer_groups,
            )
        )  # fmt: skip
        passes = None if dry else self._pass_graphs(graphs, method, keep, device, hooks)
        graph_key = None
        if passes is None:
            cache = allocate_cache(family, plan, batch, guidance)
        else:  # one cache per shape: a captured pass reads and writes it at fixed addresses
            graph_key = (repr(method), tuple(map(tuple, schedule.grids)), batch, guidance, per_image)
            graph_key += (shape_signature(cond),)
            cache = passes.cache(graph_key, lambda: allocate_cache(family, plan, batch, guidance))
        # Per step: the CFG rows it carries, that part of the cache, and its sampling (a pass without the other
        # half of the CFG batch samples its own rows unguided).
        row_views = {
            i: _row_view(step, cache, sampling, schedule, batch, guidance)
            for i, step in enumerate(plan.steps)
            if step.rows != "all"
        }
        capture = None
        if "hidden" in keep:
            depth = family.num_layers
            if not isinstance(hidden_layer, int) or not -depth <= hidden_layer < depth:
                raise ValueError(
                    f"hidden_layer must be an int in [{-depth}, {depth - 1}] for this model, got {hidden_layer!r}"
                )
            capture = _LayerCapture(hidden_layer)

        latent = family.initial_latent(batch, schedule)
        outputs: list[StepOutput] = []
        ctx = None
        row_ctx: dict[str, Any] = {}

        def condition_stage() -> None:
            nonlocal ctx
            with instrument(None):
                ctx = family.encode_condition(cond, guidance=guidance, per_image=per_image)
                # the contexts of the passes that carry one CFG row, once (they may read text offsets)
                for rows_kind in {step.rows for step in plan.steps if step.rows != "all"}:
                    row_ctx[rows_kind] = family.context_rows(ctx, rows_kind, batch)
                if passes is not None:
                    # the contexts the captured passes read, refilled with this generation's values
                    ctx, static_rows = passes.context(graph_key, (ctx, dict(row_ctx)))
                    row_ctx.update(static_rows)

        def run_pass(i: int, step: Step, tokens: StepTokens) -> None:
            nonlocal latent
            step_ctx, step_cache, step_sampling, step_rows = ctx, cache, sampling, rows
            if i in row_views:
                step_cache, step_sampling = row_views[i]
                step_ctx, step_rows = row_ctx[step.rows], batch
            with instrument(i):
                x = family.embed(latent, step_ctx, tokens, schedule)
                r, c = tokens.positions(step_rows, device)
                spec = PassSpec(
                    tokens.scale_ids(device), r, c, rope=positions, scales=tokens.scales, cache=step_cache,
                    append=step.append, attention=attention, hook=hooks.sublayer, group_hook=hooks.block_group,
                    cfg_rows=step.rows, batch=batch, layer_outputs=capture.reset() if capture else None,
                )  # fmt: skip
                if passes is None:
                    hidden = family.forward(x, step_ctx, spec)
                else:

                    def forward(x_in, spec_in, ctx_in=step_ctx):
                        return family.forward(x_in, ctx_in, spec_in)

                    hidden = passes.run(graph_key, i, forward, x, spec)
                raw = family.logits(hidden, step_ctx, tokens, step_sampling, schedule)
            samples = family.sample(raw, tokens, step_sampling, schedule, generators, batch)
            samples = family.finish(
                samples, hidden, step_ctx, tokens, schedule, sampling=step_sampling, generators=generators,
                batch=batch,
            )  # fmt: skip
            latent = family.accumulate_images(latent, samples, tokens, schedule, per_image=per_image)
            outputs.append(
                StepOutput(
                    step, tokens, samples,
                    logits=raw if "logits" in keep else None,
                    latent=latent.clone() if "latents" in keep else None,
                    hidden=capture.value if capture else None,
                )
            )  # fmt: skip

        # The work as (stage, action) segments; consecutive segments of one stage share one timed region.
        segments: list[tuple[str, Callable[[], None]]] = [("text", condition_stage)]
        chosen: dict[int, StepTokens] = {}
        for i, step in enumerate(plan.steps):
            if step.kind == "packed":

                def select(i=i, step=step) -> None:
                    chosen[i] = method.select(step, latent, family)

                segments.append((step.select_stage or step.stage, select))
            else:
                si = step.scales[0]
                chosen[i] = StepTokens.full(si, tuple(schedule.grids[si]))
            segments.append((step.stage, lambda i=i, step=step: run_pass(i, step, chosen[i])))

        # Nothing in the loop reads a tensor value back (each read would stall a GPU): moss-dispatch's NaN checks
        # are off inside it, and the result is checked once, after it.
        with family.autocast(), trusted_values():
            start = 0
            while start < len(segments):
                stage = segments[start][0]
                end = start
                while end < len(segments) and segments[end][0] == stage:
                    end += 1
                with clock.stage(stage):
                    for _, action in segments[start:end]:
                        action()
                start = end
        if not dry and not bool(torch.isfinite(latent).all()):  # the generation's one value read
            raise FloatingPointError(
                "the generated latent contains NaN or inf values: the model's numerics overflowed or its weights "
                "are not finite; check the checkpoint and model.dtype (fp16 overflows where bf16 does not)"
            )

        images = decoded = None
        if decode:
            with clock.stage("decode"), family.autocast():
                decoded = family.decode(latent, per_image=per_image)
            images = family.to_uint8(decoded)
        stats = GenerationStats(
            [o.tokens.num_tokens for o in outputs], cache.nbytes, dict(clock.seconds), plan.skipped_scales
        )
        truncated = list(getattr(cond, "truncated", None) or [])
        return GenerationResult(images, decoded, latent, outputs, stats, method.name, truncated)

    def _pass_graphs(self, graphs, method: Method, keep, device, hooks) -> PassGraphs | None:
        """The captured passes this generation uses (the generator's own for ``graphs=True``), or None."""
        if graphs is False or graphs is None:
            return None
        passes = graphs if isinstance(graphs, PassGraphs) else None
        if passes is None:
            if graphs is not True:
                raise ValueError(f"graphs must be True, False or a PassGraphs, got {graphs!r}")
            passes = self.__dict__.setdefault("_graphs", PassGraphs("cuda"))
        reason = graph_refusal(method, keep, device if passes.capture == "cuda" else torch.device("cuda"))
        if reason is None and (hooks.sublayer is not None or hooks.block_group is not None):
            reason = (
                f"method {method.name!r} places hooks inside the passes, whose per-generation state (cached "
                "outputs, random draws) a replayed graph would not update"
            )
        if reason is not None:
            raise ValueError(f"CUDA graphs cannot capture this generation: {reason}; run it with graphs off")
        return passes


def allocate_cache(family: ScaleFamily, plan: StepPlan, batch: int, guidance: bool) -> KVCache:
    """The KV cache a generation allocates: every CFG row its passes carry (the unconditional ones whenever a pass
    runs on them), each layer sized by the plan."""
    rows = 2 * batch if guidance or plan.needs_unconditional else batch
    return family.kv_cache(rows, plan.cache_capacity(_num_layers(family)))


def _num_layers(family: ScaleFamily) -> int | None:
    try:
        return family.num_layers
    except NotImplementedError:
        return None


def _row_view(step: Step, cache, sampling: SamplingConfig, schedule, batch: int, guidance: bool):
    """The cache rows and the sampling of a step that carries only the conditional or unconditional rows."""
    if step.rows == "uncond":
        view = cache.with_rows(slice(batch, 2 * batch))
    else:
        view = cache.with_rows(slice(0, batch)) if guidance else cache
    n = len(schedule.grids)
    cfgs = sampling.per_scale("cfg", n)
    unguided = tuple(1.0 if s in step.scales else v for s, v in enumerate(cfgs))
    return view, replace(sampling, cfg=unguided)


class _LayerCapture:
    """Keeps the hidden states after one block of the current pass (only that one is held)."""

    def __init__(self, layer: int):
        self.layer = layer
        self.value: torch.Tensor | None = None
        self._recent: collections.deque = collections.deque(maxlen=max(1, -layer))
        self._count = 0

    def reset(self) -> _LayerCapture:
        self.value, self._count = None, 0
        self._recent.clear()
        return self

    def __call__(self, layer: int, hidden: torch.Tensor) -> None:
        if self.layer >= 0:
            if layer == self.layer:
                self.value = hidden
            return
        self._recent.append(hidden)  # the last |layer| outputs; the oldest is the one asked for at the end
        if len(self._recent) == self._recent.maxlen:
            self.value = self._recent[0]
