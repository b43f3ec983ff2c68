"""tools/train_testbed.py: the testbed's two training stages as Lightning modules on the Shapes stream.

The losses and the models are moss-models' (:mod:`moss_models.testbed`); this is the glue: settings checked
before anything is built, the data stream, the optimiser, ``Trainer.fit`` with ``ModelCheckpoint`` and resume, and
the safetensors export a stage ends with.

Resume: the stream is read in order (item ``i`` of :class:`ShapesDataset` is random by itself), and a resumed run
starts at item ``global_step × batch_size``, so it continues the stream instead of repeating it; crops and
condition dropout are drawn from ``(seed, step)``, so a resumed run draws what the uninterrupted one would have.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import DictConfig, OmegaConf
from safetensors.torch import load_file
from torch.utils.data import DataLoader, Sampler

from moss_eval.quality.shapes import LAYOUTS, ShapesDataset, collate_shapes, vocabulary
from moss_models import CheckpointMismatchError, CheckpointNotFoundError
from moss_models.core.checkpoints import load_into
from moss_models.infinity import BSQVAE, InfinityFamily, InfinityTransformer
from moss_models.testbed import (
    VAE_FILE,
    ModelSpec,
    cropped_grids,
    export_files,
    grow_depth,
    make_spec,
    save_testbed,
    save_vae,
    spec_from_record,
    text_encoder_of,
    transformer_losses,
    vae_losses,
)
from moss_models.testbed.trained import read_card
from moss_run.errors import UserError
from moss_run.machine import machine_info

log = logging.getLogger("moss.train")

STAGES = ("vae", "transformer")
ACCELERATORS = ("cpu", "gpu")
MAX_TIME = re.compile(r"\d+:\d{2}:\d{2}:\d{2}")  # Lightning's "DD:HH:MM:SS"
# Lightning precisions: bf16-mixed autocasts the matmuls to bf16 (fp32 weights and optimiser); per transformer step
# on 2 CPU cores 1.25x faster than 32-true with AMX (Intel), about 1.1x with AVX512-BF16 alone (AMD EPYC: 1.2-1.3
# against 1.3-1.45 s), slower on a CPU without bf16 units; on a GPU, the usual choice
PRECISIONS = ("32-true", "bf16-mixed")


# ---------------------------------------------------------------------------------------------- settings


def _int(cfg: DictConfig, key: str, low: int = 1) -> int:
    value = OmegaConf.select(cfg, key)
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise UserError(f"{key}={value!r} is not allowed: an int >= {low}")
    return value


def _float(cfg: DictConfig, key: str, low: float = 0.0, high: float = math.inf, *, open_low=False) -> float:
    value = OmegaConf.select(cfg, key)
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or not (value > low if open_low else value >= low) or value > high:
        bound = f"{'>' if open_low else '>='} {low}" + (f" and <= {high}" if high != math.inf else "")
        raise UserError(f"{key}={value!r} is not allowed: a number {bound}")
    return float(value)


def build_spec(cfg: DictConfig) -> ModelSpec:
    m = OmegaConf.to_container(cfg.model, resolve=True)
    try:
        return make_spec(
            m.get("sides"), m.get("vae") or None, text_layers=m.get("text_layers"), **(m.get("arch") or {})
        )
    except (TypeError, ValueError) as err:
        raise UserError(f"model={m}: {err}") from None


def check_settings(cfg: DictConfig) -> ModelSpec:
    """Every setting the run reads, checked before anything is built (errors name the key and value)."""
    if cfg.stage not in STAGES:
        raise UserError(f"stage={cfg.stage!r} is not allowed: one of {list(STAGES)} (train the VAE first)")
    spec = build_spec(cfg)
    for key in ("seed", "data.seed"):
        _int(cfg, key, 0)
    _int(cfg, "threads")
    size, length = _int(cfg, "data.size", 8), _int(cfg, "data.length")
    if size != spec.resolution:
        raise UserError(
            f"data.size={size} does not match the testbed: its last scale side {spec.sides[-1]} × VAE patch size "
            f"{spec.config.vae.patch_size} = {spec.resolution}"
        )
    stage = cfg.stage
    steps = _int(cfg, f"{stage}.steps")
    _int(cfg, f"{stage}.batch_size")
    if stage == "transformer":
        prefix = _int(cfg, "transformer.prefix.images", 0)
        scales = _int(cfg, "transformer.prefix.scales")
        if prefix and scales >= len(spec.sides):  # (unread without prefix images)
            raise UserError(
                f"transformer.prefix.scales={scales} is not allowed: fewer than the schedule's "
                f"{len(spec.sides)} scales (sides {list(spec.sides)})"
            )
    items = steps * images_per_step(OmegaConf.to_container(cfg[stage], resolve=True))  # what the loader takes
    if items > length:
        raise UserError(
            f"{stage}.steps × the images per step = {items} items, more than data.length={length}"
        )
    _float(cfg, f"{stage}.lr", 0.0, open_low=True)
    precision = OmegaConf.select(cfg, f"{stage}.precision")
    if precision not in PRECISIONS:
        raise UserError(f"{stage}.precision={precision!r} is not allowed: one of {list(PRECISIONS)}")
    _int(cfg, f"{stage}.warmup", 0)
    _float(cfg, f"{stage}.weight_decay")
    if stage == "vae":
        _float(cfg, "vae.commit_weight")
        crop = OmegaConf.select(cfg, "vae.crop")
        patch = spec.config.vae.patch_size
        if crop is not None and (
            not isinstance(crop, int) or isinstance(crop, bool) or crop % patch or not patch <= crop <= size
        ):
            raise UserError(
                f"vae.crop={crop!r} is not allowed: null or a multiple of {patch} in [{patch}, {size}]"
            )
    else:
        _float(cfg, "transformer.cond_drop", 0.0, 1.0)
        _float(cfg, "transformer.self_correction", 0.0, 1.0)
        reweight = OmegaConf.select(cfg, "transformer.reweight_by_scale")
        if not isinstance(reweight, bool):
            raise UserError(f"transformer.reweight_by_scale={reweight!r} is not allowed: true or false")
        init_export(cfg, spec)  # a bad transformer.init_from stops here, before anything is built
    _int(cfg, "data.workers", 0)
    layout = OmegaConf.select(cfg, "data.layout")
    if layout not in LAYOUTS:
        raise UserError(f"data.layout={layout!r} is not allowed: one of {list(LAYOUTS)}")
    _float(cfg, "data.relation_rate", 0.0, 1.0)
    accelerator = OmegaConf.select(cfg, "train.accelerator")
    if accelerator not in ACCELERATORS:
        raise UserError(f"train.accelerator={accelerator!r} is not allowed: one of {list(ACCELERATORS)}")
    if accelerator == "gpu" and not torch.cuda.is_available():
        raise UserError(
            f"train.accelerator='gpu' is not allowed on this machine: torch {torch.__version__} sees no CUDA "
            "device; use train.accelerator=cpu (the CPU recipe)"
        )
    max_time = OmegaConf.select(cfg, "train.max_time")
    if max_time is not None and not (isinstance(max_time, str) and MAX_TIME.fullmatch(max_time)):
        raise UserError(
            f'train.max_time={max_time!r} is not allowed: null or "DD:HH:MM:SS", e.g. 00:00:08:00'
        )
    _int(cfg, "train.log_every")
    _int(cfg, "train.ckpt_every")
    _float(cfg, "train.grad_clip")
    return spec


def init_export(cfg: DictConfig, spec: ModelSpec) -> dict | None:
    """``transformer.init_from``'s export files and card, checked against the run's spec; None when unset."""
    init = OmegaConf.select(cfg, "transformer.init_from")
    if init is None:
        return None
    if not isinstance(init, str) or not init:
        raise UserError(f"transformer.init_from={init!r} is not allowed: null, 'shipped' or an export folder")
    try:
        files = export_files(None if init == "shipped" else init)
    except CheckpointNotFoundError as err:
        raise UserError(f"transformer.init_from={init!r}: {err}") from None
    try:
        card = read_card(files["card"])
        theirs = spec_from_record(card)
    except (CheckpointMismatchError, ValueError) as err:
        raise UserError(f"transformer.init_from={init!r}: {err}") from None
    # a bag-of-words export (no text layers) may start a run with them: its embeddings are loaded and the layers
    # start as identity (WordTextEncoder.start_context_as_identity), so training continues where it was
    upgrade = theirs.text_layers == 0 < spec.text_layers
    if upgrade:
        theirs = dataclasses.replace(theirs, text_layers=spec.text_layers, text_heads=spec.text_heads)
    # a deeper model.arch.depth, a multiple of the export's: the export's blocks are kept, each followed by identity
    # blocks (moss_models.testbed.grow_depth), so training continues from the same function with more capacity
    old, new = theirs.config, spec.config
    grow = new.depth != old.depth and new.depth % old.depth == 0
    if grow:
        theirs = dataclasses.replace(
            theirs, config=dataclasses.replace(old, depth=new.depth, block_chunks=new.block_chunks)
        )
    if theirs != spec:
        raise UserError(
            f"transformer.init_from={init!r} holds a testbed of other shapes (sides {list(theirs.sides)}, "
            f"{theirs.config}) than this run's model.* settings give (sides {list(spec.sides)}, {spec.config}); "
            "only model.arch.depth may differ, as a multiple of the export's"
        )
    grown = {"depth": old.depth, "block_chunks": old.block_chunks} if grow else None
    return {"files": files, "card": card, "name": init, "upgrade_text": upgrade, "grow_from": grown}


# ---------------------------------------------------------------------------------------------- data


class StreamSampler(Sampler[int]):
    """Indices ``start, start + 1, …, length − 1``: the stream in order, from where a resumed run left off."""

    def __init__(self, length: int, start: int = 0):
        self.length, self.start = length, start

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.start, self.length))

    def __len__(self) -> int:
        return self.length - self.start


class ShapesStream(L.LightningDataModule):
    def __init__(
        self, seed: int, size: int, length: int, batch_size: int, workers: int = 0, pin: bool = False,
        layout: str = "random", relation_rate: float = 0.5,
    ):  # fmt: skip
        super().__init__()
        self.dataset = ShapesDataset(seed, size, length, layout, relation_rate)
        self.batch_size, self.workers, self.pin = batch_size, workers, pin

    def train_dataloader(self) -> DataLoader:
        # Lightning restores the checkpoint (and so global_step) before it asks for the loader
        start = self.trainer.global_step * self.batch_size if self.trainer is not None else 0
        sampler = StreamSampler(len(self.dataset), start)
        # rendering one 128² scene takes ~1.5 ms: worker processes would cost more than they save on 2 cores,
        # but a GPU step eats a batch faster than one process renders it (data.workers); the order is the
        # sampler's either way, so a run with workers sees the same batches as one without
        return DataLoader(
            self.dataset, self.batch_size, sampler=sampler, collate_fn=collate_shapes, drop_last=True,
            num_workers=self.workers, persistent_workers=self.workers > 0, pin_memory=self.pin,
        )  # fmt: skip


def images_per_step(settings: dict) -> int:
    """The stream items one step takes: the batch, and for the transformer its prefix images after it."""
    return settings["batch_size"] + (settings.get("prefix") or {}).get("images", 0)


def step_generator(seed: int, step: int) -> torch.Generator:
    """A generator for the random draws of one step (crops, condition dropout), the same on resume."""
    return torch.Generator().manual_seed(seed * 1_000_003 + step)


# ---------------------------------------------------------------------------------------------- modules


class _Stage(L.LightningModule):
    def __init__(self, settings: dict, seed: int):
        super().__init__()
        self.settings, self.seed = settings, seed
        self._last = None
        # fit wall time summed over every resume of this run (kept in the checkpoint), so an export made by
        # rerunning a stopped run records the training it took, not the seconds of the export call
        self.seconds_before, self._fit_start, self._fit_end = 0.0, None, None

    def on_train_start(self) -> None:
        self._fit_start, self._fit_end = time.perf_counter(), None

    def on_train_end(self) -> None:
        # the clock stops with the fit: the final checkpoint and the export after it are not training time
        self._fit_end = time.perf_counter()

    def train_seconds(self) -> float:
        if self._fit_start is None:
            return self.seconds_before
        return self.seconds_before + ((self._fit_end or time.perf_counter()) - self._fit_start)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["train_seconds"] = self.train_seconds()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.seconds_before = float(checkpoint.get("train_seconds", 0.0))

    def trainable(self) -> list[torch.nn.Parameter]:
        raise NotImplementedError

    def configure_optimizers(self):
        s = self.settings
        opt = torch.optim.AdamW(
            self.trainable(), lr=s["lr"], betas=(0.9, 0.95), weight_decay=s["weight_decay"]
        )
        warmup, total = s["warmup"], s["steps"]

        def factor(step: int) -> float:  # linear warm-up, then cosine down to 10 %
            if step < warmup:
                return (step + 1) / warmup
            t = (step - warmup) / max(1, total - warmup)
            return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def log_losses(self, out: dict[str, torch.Tensor], batch_size: int) -> None:
        now = time.perf_counter()
        if self._last is not None:  # wall time of the previous step (data, forward, backward, optimiser)
            self.log("perf/step_s", now - self._last, batch_size=batch_size)
        self._last = now
        main = {"loss", "psnr", "bit_acc"}
        self.log_dict({f"train/{k}": v.detach() for k, v in out.items() if k in main}, prog_bar=True,
                      batch_size=batch_size)  # fmt: skip
        self.log_dict(
            {f"train/{k}": v.detach() for k, v in out.items() if k not in main}, batch_size=batch_size
        )


class VAEStage(_Stage):
    def __init__(self, spec: ModelSpec, settings: dict, seed: int):
        super().__init__(settings, seed)
        self.spec = spec
        torch.manual_seed(seed)
        self.vae = BSQVAE(spec.config.vae)
        crop = settings.get("crop")
        patch = spec.config.vae.patch_size
        self.grids = cropped_grids(spec.sides, crop // patch) if crop else list(spec.grids)

    def trainable(self):
        return list(self.vae.parameters())

    def training_step(self, batch, batch_idx):
        images = batch[0]
        crop = self.settings.get("crop")
        if crop and crop < images.shape[-1]:
            gen = step_generator(self.seed, self.global_step)
            room = images.shape[-1] - crop + 1
            ys, xs = torch.randint(room, (2, images.shape[0]), generator=gen).tolist()
            # contiguous: the CPU convolutions take a much slower path on a strided view
            images = torch.stack(
                [im[:, y : y + crop, x : x + crop] for im, y, x in zip(images, ys, xs, strict=True)]
            )
        out = vae_losses(self.vae, images.contiguous(), self.grids, self.settings["commit_weight"])
        self.log_losses(out, images.shape[0])
        return out["loss"]


class TransformerStage(_Stage):
    def __init__(self, spec: ModelSpec, settings: dict, seed: int, vae_state: dict, words: list[str]):
        super().__init__(settings, seed)
        self.spec = spec
        cfg = spec.config
        self.transformer = InfinityTransformer(cfg).init_random(seed)
        torch.manual_seed(seed)
        self.text = text_encoder_of(spec, words, strict=True)
        torch.nn.init.normal_(
            self.text.embedding.weight, std=1.0
        )  # unit scale, like T5 features after text_norm
        self.vae = BSQVAE(cfg.vae)
        self.vae.load_state_dict(vae_state)
        self.vae.requires_grad_(False)  # frozen: its bits are the labels
        self.family = InfinityFamily(self.transformer, self.vae, self.text)
        # the family puts its modules in eval mode (it is built for generation); none of them has dropout or
        # batch norm, so the mode changes nothing here but Lightning's warning about modules left in eval
        self.transformer.train()
        self.vae.train()
        self.schedule = spec.schedule()

    def trainable(self):
        return [*self.transformer.parameters(), *self.text.parameters()]

    def training_step(self, batch, batch_idx):
        images, prompts, _ = batch
        gen = step_generator(self.seed, self.global_step)
        drop = (torch.rand(len(prompts), generator=gen) < self.settings["cond_drop"]).tolist()
        prefix = self.settings.get("prefix") or {}
        out = transformer_losses(
            self.family, self.text, images, prompts, self.schedule, drop,
            self_correction=self.settings.get("self_correction", 0.0),
            reweight_by_scale=self.settings.get("reweight_by_scale", False), generator=gen,
            prefix_images=prefix.get("images", 0), prefix_scales=prefix.get("scales", 0),
        )  # fmt: skip
        self.log_losses(out, images.shape[0])
        return out["loss"]


# ---------------------------------------------------------------------------------------------- export


def export(
    module: _Stage, cfg: DictConfig, out_dir: Path, seconds: float, init: dict | None = None
) -> list[Path]:
    """The stage's weights as safetensors (and, after the transformer, the card that ties them together)."""
    recipe = OmegaConf.to_container(cfg[cfg.stage], resolve=True)
    machine = (
        machine_info()
    )  # which torch and CPU/GPU made these weights (the card's lineage keeps each run's)
    meta = {"stage": cfg.stage, "steps": str(module.global_step), "recipe": json.dumps(recipe),
            "seconds": f"{module.train_seconds():.1f}", "machine": json.dumps(machine)}  # fmt: skip
    if cfg.stage == "vae":
        return [save_vae(out_dir, module.vae, meta)]
    training = {
        "vae": load_file_meta(out_dir / VAE_FILE),
        "transformer": {
            "steps": module.global_step,
            "seconds": round(module.train_seconds(), 1),  # over all resumes of this run
            "seconds_this_run": round(seconds, 1),
            "recipe": recipe,
            "machine": machine,
        },
    }
    if init is not None:  # the lineage: what this run started from, and how that was trained
        prior = init["card"].get("training", {})
        training["transformer"]["init_from"] = {
            "folder": init["name"],
            "training": prior,
            "seed": init["card"].get("seed"),
            "data": init["card"].get("data"),  # which scenes it saw (data.seed)
        }
        if init["upgrade_text"]:
            training["transformer"]["init_from"]["text_layers_added"] = module.spec.text_layers
        if init["grow_from"]:
            training["transformer"]["init_from"]["depth_grown_from"] = init["grow_from"]["depth"]
        training["transformer"]["total_steps"] = module.global_step + prior.get("transformer", {}).get(
            "total_steps", prior.get("transformer", {}).get("steps", 0)
        )
    card = {"training": training, "seed": cfg.seed, "data": OmegaConf.to_container(cfg.data, resolve=True)}
    return save_testbed(out_dir, module.spec, module.transformer, module.text, meta=meta, card=card)


def load_file_meta(path: Path) -> dict:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        meta = f.metadata() or {}
    out = {"steps": int(meta.get("steps", 0)), "recipe": json.loads(meta.get("recipe", "{}"))}
    if "seconds" in meta:  # exports before the summed fit time have none
        out["seconds"] = float(meta["seconds"])
    if "machine" in meta:  # nor before the machine was recorded
        out["machine"] = json.loads(meta["machine"])
    return out


# ---------------------------------------------------------------------------------------------- run


def run_training(cfg: DictConfig) -> dict:
    """One stage: fit (resuming from its last checkpoint when asked), then export. Returns what it did."""
    spec = check_settings(cfg)
    stage = cfg.stage
    out_dir = Path(cfg.out_dir)
    ckpt_dir = out_dir / stage / "checkpoints"
    has_ckpt = (ckpt_dir / "last.ckpt").exists()
    if has_ckpt and not cfg.resume:
        raise UserError(
            f"resume=false but {ckpt_dir} holds checkpoints of an earlier run; rerun with resume=true to continue "
            "it, or give another out_dir (or delete that folder) to start over"
        )
    settings = OmegaConf.to_container(cfg[stage], resolve=True)
    torch.set_num_threads(cfg.threads)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    init = None  # the export a transformer run starts from (transformer.init_from)
    if stage == "vae":
        module: _Stage = VAEStage(spec, settings, cfg.seed)
    else:
        vae_path = out_dir / VAE_FILE
        init = init_export(cfg, spec)
        if init is not None:  # continue from an export: its VAE is this run's (its bits are the labels)
            theirs = init["files"]["vae"]
            if vae_path.exists() and vae_path.read_bytes() != theirs.read_bytes():
                raise UserError(
                    f"transformer.init_from={init['name']!r} was trained on the VAE {theirs}, but {vae_path} is "
                    "another one; give an empty out_dir (the VAE is copied there) or the matching one"
                )
            out_dir.mkdir(parents=True, exist_ok=True)
            if not vae_path.exists():
                shutil.copyfile(theirs, vae_path)
        if not vae_path.exists():
            raise UserError(
                f"stage=transformer needs the trained VAE {vae_path}: run stage=vae first (same out_dir)"
            )
        try:
            module = TransformerStage(spec, settings, cfg.seed, load_file(str(vae_path)), vocabulary())
        except RuntimeError as err:  # a VAE of another shape (model.vae changed between the stages)
            raise UserError(f"{vae_path} does not fit model.vae={dict(cfg.model.vae)}: {err}") from None
    if stage == "transformer" and init is not None and not has_ckpt:  # a checkpoint, when resuming, wins
        state = load_file(str(init["files"]["transformer"]))
        if init["grow_from"]:
            g, c = init["grow_from"], module.spec.config
            state = grow_depth(state, module.transformer.state_dict(), g["depth"], g["block_chunks"],
                               c.depth, c.block_chunks)  # fmt: skip
            log.info("init_from %s: %d blocks grown to %d (each followed by identity blocks)",
                     init["name"], g["depth"], c.depth)  # fmt: skip
        load_into(module.transformer, state, "init_from transformer")
        text_state = load_file(str(init["files"]["text"]))
        # a bag-of-words encoder: its embeddings, and context layers that start as identity
        if init["upgrade_text"]:
            module.text.start_context_as_identity()
            load_into(
                module.text.embedding, {"weight": text_state["embedding.weight"]}, "init_from word embeddings"
            )
            log.info("init_from %s: word embeddings loaded; %d context layers start as identity",
                     init["name"], module.text.layers)  # fmt: skip
        else:
            load_into(module.text, text_state, "init_from text encoder")
    data = ShapesStream(cfg.data.seed, cfg.data.size, cfg.data.length, images_per_step(settings),
                        cfg.data.workers, pin=cfg.train.accelerator == "gpu", layout=cfg.data.layout,
                        relation_rate=cfg.data.relation_rate)  # fmt: skip
    logger = instantiate(cfg.logger) if cfg.get("logger") and "_target_" in cfg.logger else False
    checkpoint = ModelCheckpoint(dirpath=ckpt_dir, save_last=True, every_n_train_steps=cfg.train.ckpt_every)
    trainer = L.Trainer(
        accelerator=cfg.train.accelerator,
        devices=1,  # one process: the stream's resume offset (global_step × batch_size) assumes one
        max_steps=settings["steps"],
        max_time=cfg.train.max_time,
        max_epochs=-1,
        logger=logger,
        callbacks=[checkpoint],
        log_every_n_steps=cfg.train.log_every,
        gradient_clip_val=cfg.train.grad_clip or None,
        enable_progress_bar=bool(cfg.train.progress_bar),
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        default_root_dir=str(out_dir / stage),
        precision=settings["precision"],
    )
    start = time.perf_counter()
    # the resumed checkpoint holds only tensors and plain containers: nothing in it needs unpickling
    trainer.fit(module, datamodule=data, ckpt_path="last" if has_ckpt else None, weights_only=True)
    seconds = time.perf_counter() - start
    checkpoint_path = ckpt_dir / "last.ckpt"
    if trainer.global_step % cfg.train.ckpt_every:  # the final step is checkpointed too, so resume is exact
        trainer.save_checkpoint(checkpoint_path, weights_only=False)  # with the optimiser: resume is exact
    files = export(module, cfg, out_dir, seconds, init)
    log.info("stage %s: %d steps in %.0f s; exported %s", stage, trainer.global_step, seconds,
             ", ".join(str(f) for f in files))  # fmt: skip
    return {"stage": stage, "steps": trainer.global_step, "seconds": seconds, "files": files,
            "checkpoint": checkpoint_path}  # fmt: skip
