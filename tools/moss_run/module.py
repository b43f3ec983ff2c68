"""The LightningModule of the main job: one prediction step generates one batch of images."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import lightning as L

from moss_eval import ImageRecord, StageTimer, peak_memory
from moss_models import Method, NextScaleGenerator, dry_run
from moss_run.config import GenerationConfig
from moss_run.models import build


class GenerationModule(L.LightningModule):
    """Wraps a generator: builds it on this rank's device, warms it up, and generates per batch.

    Returns, per image, the uint8 image and its :class:`~moss_eval.ImageRecord` (the JSON line the writer stores).
    """

    def __init__(
        self,
        build_generator: Callable[..., NextScaleGenerator],
        *,
        generation: GenerationConfig,
        method: Method,
        measure: dict,
        run_info: dict,
        fallbacks: list[str],
        warmup_condition: int | str = "warm-up",
    ):
        super().__init__()
        self.build_generator = build_generator
        self.generation = generation
        self.method = method
        self.sampling = generation.sampling
        self.measure = dict(measure)
        self.run_info = dict(run_info)
        self.fallbacks = list(fallbacks)
        self.warmup_condition = warmup_condition  # what the warm-up generates: a prompt, or a class label
        self.generator: NextScaleGenerator | None = None
        self.flops: int | None = None

    def setup(self, stage: str) -> None:
        self.generator = build(self.build_generator, self.trainer.strategy.root_device)

    def _generate(self, prompts, seeds, aspect_ratio, clock=None):
        return self.generator.generate(
            prompts,
            seeds,
            method=self.method,
            resolution=self.generation.resolution,
            aspect_ratio=aspect_ratio,
            sampling=self.sampling,
            clock=clock,
            graphs=self.generation.cuda_graphs,
        )

    def on_predict_start(self) -> None:
        if self.measure.get("flops", False):
            # Backbone FLOPs of one image (decode excluded, as the paper's latency), from a meta-device dry run of
            # the same generator and method: exact, and independent of the prompt and of the attention kernel.
            run = dry_run(
                self.generator, self.method, resolution=self.generation.resolution,
                aspect_ratio=self.generation.aspect_ratio, sampling=self.sampling,
            )  # fmt: skip
            self.flops = int(run.flops)
        # Untimed warm-up generations (kernel selection, caches, lazy init).
        for _ in range(int(self.measure.get("warmup", 0))):
            self._generate([self.warmup_condition], [0], self.generation.aspect_ratio)

    def predict_step(self, batch: list[dict], batch_idx: int) -> list[dict]:
        device = self.trainer.strategy.root_device
        outputs = []
        ratio_of = lambda item: item["aspect_ratio"] or self.generation.aspect_ratio  # noqa: E731
        for ratio, group in itertools.groupby(sorted(batch, key=ratio_of), key=ratio_of):
            items = list(group)
            timer = StageTimer(device)
            with peak_memory(device) as peak:  # bytes on CUDA, None elsewhere
                result = self._generate(
                    [it["label"] if it["label"] is not None else it["prompt"] for it in items],
                    [it["seed"] for it in items],
                    ratio,
                    timer,
                )
            seconds = dict(timer.seconds)
            seconds["backbone"] = sum(v for k, v in seconds.items() if k != "decode")
            seconds["total"] = sum(v for k, v in seconds.items() if k != "backbone")
            n = len(items)
            for i, item in enumerate(items):
                record = ImageRecord(
                    **{k: item[k] for k in ("id", "index", "prompt", "seed")},
                    **self.run_info,
                    image=f"images/{item['id']}.png",
                    resolution=self.generation.resolution,
                    aspect_ratio=ratio,
                    batch_size=n,
                    latency_s={k: v / n for k, v in seconds.items()},
                    tokens_processed=result.stats.tokens_processed,
                    tokens_per_pass=list(result.stats.tokens_per_pass),
                    forward_passes=result.stats.forward_passes,
                    kv_cache_bytes=result.stats.kv_cache_bytes // n,
                    peak_memory_bytes=peak.bytes,
                    flops=self.flops,
                    fallbacks=list(self.fallbacks),
                    rank=self.global_rank,
                    extra={
                        "skipped_scales": list(result.stats.skipped_scales),
                        "prompt_truncated": bool(result.truncated[i]) if result.truncated else False,
                        **({"label": item["label"]} if item["label"] is not None else {}),
                        **({"benchmark": item["benchmark"]} if item.get("benchmark") else {}),
                    },
                )
                outputs.append({"image": result.images[i].cpu().numpy(), "record": record})
        return outputs
