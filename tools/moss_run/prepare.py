"""Everything the main job decides before it builds a model or starts Lightning.

:func:`prepare` checks the whole composed config (every ``generation.*`` and ``moss.*`` value, the model's name,
weights, dtype and files, this machine), builds the method, the generation settings and the prompt set, and
checks the run folder: a folder carries a fingerprint of everything that determines its images, and a resume
with a different fingerprint, or with other prompts under the same ids, stops before anything is written. Every
problem is a :class:`~moss_run.errors.UserError`: one paragraph naming the key, the value and what is allowed.
Nothing here imports Lightning, so a bad setting is reported in seconds.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import warnings
from dataclasses import dataclass, field
from numbers import Real
from pathlib import Path
from typing import Any

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from moss_attention import BackendUnavailableError, get_backend
from moss_eval import RunDirectory, atomic_write_text
from moss_models import SEEDING_MODES, Method
from moss_models.core import RunInfo, graph_refusal, model_entry
from moss_models.infinity import DTYPES
from moss_run.config import GenerationConfig
from moss_run.data import PromptDataset
from moss_run.errors import UserError
from moss_run.evaluation import build_evaluators, check_evaluators, needs_reference, plan_reference
from moss_run.models import check_model_files

FINGERPRINT = "fingerprint.json"
WEIGHTS = ("release", "random")


def warn_fallback(fallbacks: list[str], message: str) -> None:
    """A fallback always warns and is recorded in every record and in summary.json."""
    warnings.warn(message, RuntimeWarning, stacklevel=2)
    fallbacks.append(message)


# ---------------------------------------------------------------------------------------------- values


def _is_number(v: Any) -> bool:
    return isinstance(v, Real) and not isinstance(v, bool) and math.isfinite(float(v))


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _plain(value: Any) -> Any:
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def _get(cfg: DictConfig, key: str) -> Any:
    """A config value, resolved; an interpolation that fails is a user error naming the key."""
    try:
        return _plain(OmegaConf.select(cfg, key, throw_on_missing=True))
    except Exception as err:
        raise UserError(f"{key}: {err}".split("\n")[0]) from None


def _per_scale(key: str, value: Any, n_scales: int, ok, allowed: str) -> None:
    values = value if isinstance(value, list | tuple) else [value]
    if isinstance(value, list | tuple) and len(values) != n_scales:
        raise UserError(
            f"{key}={value} has {len(values)} values but the schedule has {n_scales} scales; give one number, or "
            f"one per scale"
        )
    for v in values:
        if not (_is_number(v) and ok(float(v))):
            raise UserError(
                f"{key}={value!r} is not allowed: it must be {allowed}, or a list of one per scale"
            )


def check_settings(cfg: DictConfig) -> None:
    """Every ``model.*``, ``generation.*`` and ``moss.*`` value the run reads, checked before anything is built."""
    name = _get(cfg, "model.name")
    try:
        entry = model_entry(name)
    except ValueError as err:
        raise UserError(f"model.name={name!r}: {err}") from None
    weights = _get(cfg, "model.weights")
    if weights not in WEIGHTS:
        raise UserError(f"model.weights={weights!r} is not allowed; choose one of {list(WEIGHTS)}")
    dtype = _get(cfg, "model.dtype")
    if dtype not in DTYPES:
        raise UserError(f"model.dtype={dtype!r} is not allowed; choose one of {sorted(DTYPES)}")
    arch = _get(cfg, "model.arch") or {}
    if arch and weights == "release":
        raise UserError(
            f"model.arch={arch} changes the architecture, so the release weights cannot load; use model.weights=random"
        )
    if _get(cfg, "model.vocabulary") is not None and weights == "release":
        raise UserError(
            f"model.vocabulary={_get(cfg, 'model.vocabulary')} changes the trained word encoder's words, so the "
            "release weights cannot load (their words are the card's); use model.weights=random"
        )

    n_scales = len(run_schedule(cfg, entry).grids)
    _per_scale(
        "generation.cfg", _get(cfg, "generation.cfg"), n_scales, lambda v: v >= 0, "a number >= 0 (1 = off)"
    )
    _per_scale("generation.tau", _get(cfg, "generation.tau"), n_scales, lambda v: v > 0, "a number > 0")
    top_k, top_p = _get(cfg, "generation.top_k"), _get(cfg, "generation.top_p")
    if not _is_int(top_k) or top_k < 0:
        raise UserError(f"generation.top_k={top_k!r} is not allowed: it must be an int >= 0 (0 = off)")
    if not _is_number(top_p) or not 0 <= top_p <= 1:
        raise UserError(f"generation.top_p={top_p!r} is not allowed: it must be a number in [0, 1] (0 = off)")
    seeding = _get(cfg, "generation.seeding")
    if seeding not in SEEDING_MODES:
        raise UserError(f"generation.seeding={seeding!r} is not allowed; choose one of {list(SEEDING_MODES)}")
    batch = _get(cfg, "generation.batch_size")
    if not _is_int(batch) or batch < 1:
        raise UserError(f"generation.batch_size={batch!r} is not allowed: it must be an int >= 1")
    graphs = _get(cfg, "generation.cuda_graphs")
    if not isinstance(graphs, bool):
        raise UserError(f"generation.cuda_graphs={graphs!r} is not allowed: it must be true or false")
    seed = _get(cfg, "seed")
    if not _is_int(seed) or not 0 <= seed < 2**63:
        raise UserError(f"seed={seed!r} is not allowed: it must be an int in [0, 2**63)")

    if "thresholds" in cfg.moss:
        _check_thresholds(cfg, n_scales)


def run_schedule(cfg: DictConfig, entry=None):
    """The run's scale schedule from ``generation.resolution``/``aspect_ratio``, without building the model."""
    entry = entry or model_entry(_get(cfg, "model.name"))
    res, ratio = _get(cfg, "generation.resolution"), _get(cfg, "generation.aspect_ratio")
    if not _is_number(ratio) or ratio <= 0:
        raise UserError(
            f"generation.aspect_ratio={ratio!r} is not allowed: it must be a positive number (height / width, "
            "snapped to the nearest official template)"
        )
    try:
        return entry.schedule(res, ratio, arch=_get(cfg, "model.arch") or {})
    except (ValueError, TypeError) as err:
        raise UserError(f"generation.resolution={res!r} is not allowed: {err}") from None


def _check_thresholds(cfg: DictConfig, n_scales: int) -> None:
    key = "moss.thresholds"
    thresholds = _get(cfg, key)
    if not isinstance(thresholds, list) or not thresholds:
        raise UserError(
            f"{key}={thresholds!r} is not allowed: give a non-empty list of percentiles in (0, 100], strictly "
            "decreasing, coarsest refine scale first (e.g. [50,25])"
        )
    for i, t in enumerate(thresholds):
        if not _is_number(t) or not 0 < t <= 100:
            raise UserError(
                f"{key}={thresholds} is not allowed: {key}[{i}]={t!r} must be a number in (0, 100] (a percentile)"
            )
    if any(b >= a for a, b in itertools.pairwise(thresholds)):
        raise UserError(
            f"{key}={thresholds} is not allowed: the percentiles must be strictly decreasing, coarsest refine scale "
            "first (e.g. [50,25])"
        )
    if len(thresholds) >= n_scales:
        raise UserError(
            f"{key}={thresholds} gives k={len(thresholds)} refine scales, but the "
            f"{_get(cfg, 'generation.resolution')} schedule has {n_scales} scales; k must be at most {n_scales - 1}"
        )
    nd = _get(cfg, "moss.num_draft_scales")
    if nd is not None and (not _is_int(nd) or n_scales - nd != len(thresholds)):
        raise UserError(
            f"moss.num_draft_scales={nd!r} leaves {n_scales - nd if _is_int(nd) else '?'} refine scales of the "
            f"{n_scales}-scale schedule, but moss.thresholds has {len(thresholds)} entries {thresholds}; give one "
            "threshold per refine scale"
        )


# ---------------------------------------------------------------------------------------------- objects


def build_object(node: DictConfig, key: str):
    """``instantiate`` one config group, with the errors its classes raise as user errors naming the key."""
    try:
        return instantiate(node)
    except Exception as err:  # Hydra wraps errors raised by the target; surface ours plainly
        cause = err.__cause__ or err
        if isinstance(cause, UserError):
            raise cause from None
        if isinstance(cause, ValueError | TypeError):
            raise UserError(f"{key}: {cause}") from None
        raise


def build_method(cfg: DictConfig) -> Method:
    """The method of ``conf/moss`` (its ``attn`` and ``dispatch`` groups nested in it), checked on the run's
    schedule before any model is built."""
    method = build_object(cfg.moss, f"moss={cfg.moss.name}")
    entry = model_entry(_get(cfg, "model.name"))
    grids = tuple(tuple(g) for g in run_schedule(cfg, entry).grids)
    try:
        plan = method.plan(grids)
        if entry.layer_groups is not None:  # the method's hooks check themselves against the model's blocks
            groups = entry.layer_groups(_get(cfg, "model.arch") or {})
            info = RunInfo(
                plan, grids, (0,), 1, True, entry.family, torch.device("meta"), groups[-1].stop, groups
            )
            hooks = method.pass_hooks(info)
            if _get(cfg, "generation.cuda_graphs") and (hooks.sublayer or hooks.block_group):
                raise UserError(
                    f"generation.cuda_graphs=true with moss={cfg.moss.name}: this method places hooks inside the "
                    "passes, whose per-generation state (cached outputs, random draws) a replayed CUDA graph would "
                    "not update; use generation.cuda_graphs=false with it"
                )
    except ValueError as err:
        raise UserError(f"moss={cfg.moss.name}: {err}") from None
    return method


def check_conditions(cfg: DictConfig, dataset: PromptDataset) -> None:
    """Class labels for a class-conditional model, prompts for a text-conditional one."""
    name = _get(cfg, "model.name")
    kind = model_entry(name).conditions
    labelled = any(it.label is not None for it in dataset.items)
    data = HydraConfig.get().runtime.choices.get("data")
    if kind == "labels" and not labelled:
        raise UserError(
            f"model={name} is class-conditional (ImageNet classes), and data={data} gives text prompts; use "
            "data=imagenet_classes ('data.classes=[207,volcano]': class ids or names)"
        )
    if kind == "prompts" and labelled:
        raise UserError(
            f"data={data} gives ImageNet class labels, and model={name} is conditioned on text prompts; use "
            "data=prompts or data=prompts_file with this model"
        )


def check_machine(cfg: DictConfig, method: Method, fallbacks: list[str]) -> Method:
    """Errors for what this machine cannot run; returns the method with the attention this machine runs."""
    accelerator = str(cfg.trainer.get("accelerator", "auto"))
    cuda = torch.cuda.is_available()
    if accelerator in ("gpu", "cuda") and not cuda:
        raise UserError(
            f"trainer.accelerator={accelerator} needs a CUDA GPU and torch sees none (torch.cuda.is_available() is "
            "False). Use trainer=cpu, or trainer=ddp trainer.accelerator=cpu trainer.devices=N for several CPU "
            "processes."
        )
    attn_name = HydraConfig.get().runtime.choices.get("attn")
    try:
        get_backend(method.attention.backend)
    except BackendUnavailableError as err:
        raise UserError(
            f"attn={attn_name}: {err}. Use attn=cssa (torch sdpa) or attn=cssa_flex instead."
        ) from None
    gpu_run = cuda and accelerator in ("gpu", "cuda", "auto")
    if _get(cfg, "generation.cuda_graphs"):
        reason = graph_refusal(method, (), torch.device("cuda" if gpu_run else "cpu"))
        if reason is not None:
            raise UserError(
                f"generation.cuda_graphs=true with attn={attn_name} on trainer.accelerator={accelerator}: {reason}. "
                "Use generation.cuda_graphs=false here."
            )
    if (
        method.attention.rope_impl == "triton"
        and not gpu_run
        and os.environ.get("TRITON_INTERPRET", "0") in ("", "0")
    ):
        warn_fallback(
            fallbacks,
            f"attn={attn_name} asks for the Triton RoPE kernels, which need CUDA (or TRITON_INTERPRET=1 on CPU); "
            "this run used the torch RoPE reference instead",
        )
        return method.with_attention(method.attention.with_(rope_impl="torch"))
    return method


# ---------------------------------------------------------------------------------------------- the run folder


def code_versions() -> dict[str, str]:
    import moss_attention
    import moss_dispatch
    import moss_eval
    import moss_models

    return {m.__name__: m.__version__ for m in (moss_dispatch, moss_attention, moss_models, moss_eval)}


def fingerprint(cfg: DictConfig, method: Method, generation: GenerationConfig) -> dict[str, Any]:
    """Everything that determines a run's images: where the checkpoint files are does not (it is left out), what
    they hold does (``weights``: their digests, see :func:`moss_run.models.weights_identity`)."""
    from moss_run.models import weights_identity

    model = {k: v for k, v in _plain(cfg.model).items() if k not in ("_target_", "_partial_", "checkpoints")}
    gen = {
        "resolution": generation.resolution,
        "aspect_ratio": generation.aspect_ratio,
        **{k: _plain(getattr(generation.sampling, k)) for k in ("cfg", "tau", "top_k", "top_p", "seeding")},
    }
    if generation.seeding == "official":  # one generator per batch: the batch decides the pixels
        gen["batch_size"] = generation.batch_size
    describe = json.loads(json.dumps(method.describe(), default=str))
    return {"model": model, "weights": weights_identity(cfg.model), "method": describe, "generation": gen,
            "code": code_versions()}  # fmt: skip


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def check_run_folder(run_dir: Path, fp: dict, dataset: PromptDataset, aspect_ratio: float) -> bool:
    """Whether the folder is new; for an old one, that its fingerprint and its finished images match this run."""
    folder = RunDirectory(run_dir)
    path = run_dir / FINGERPRINT
    done = folder.completed_ids()
    if not path.is_file():
        if done:
            raise UserError(
                f"{run_dir} holds {len(done)} images but no {FINGERPRINT} (made by moss before 0.2), so this run "
                "cannot prove it would generate the same way; resume it with the moss that made it, or use a new "
                "folder (drop hydra.run.dir)"
            )
        return True
    old = _flat(json.loads(path.read_text()))
    new = _flat(json.loads(json.dumps(fp)))
    differ = [k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
    differ.sort(
        key=lambda k: (k not in old or k not in new, k)
    )  # changed values first, then added/removed keys
    if differ:
        shown = "; ".join(
            f"{k}: {old.get(k, '(absent)')!r} in the folder, {new.get(k, '(absent)')!r} now"
            for k in differ[:8]
        )
        more = f"; … (+{len(differ) - 8} more)" if len(differ) > 8 else ""
        raise UserError(
            f"{run_dir} was made with other settings, and a run folder holds the images of one configuration: "
            f"{shown}{more}. Nothing was written. Rerun with the folder's settings to resume it, or drop "
            "hydra.run.dir to start a new folder."
        )
    items = {it.id: it for it in dataset.items}
    for record in folder.read_records():
        it = items.get(str(record.id))
        if it is None:
            continue
        want = (it.prompt, it.seed, it.aspect_ratio or aspect_ratio)
        got = (record.prompt, record.seed, record.aspect_ratio)
        if want != got:
            raise UserError(
                f"{run_dir}: image {record.id} was generated for prompt {got[0]!r} (seed {got[1]}, aspect ratio "
                f"{got[2]}), but this run gives id {record.id} prompt {want[0]!r} (seed {want[1]}, aspect ratio "
                f"{want[2]}). A folder keeps each id's image; use a new folder (drop hydra.run.dir), or give the "
                'new prompts ids of their own (a .jsonl prompt file with "id").'
            )
    return False


@dataclass
class Prepared:
    run_dir: Path
    method: Method
    generation: GenerationConfig
    dataset: PromptDataset
    run_info: dict
    fallbacks: list[str] = field(default_factory=list)
    new_folder: bool = True
    evaluators: dict[str, Any] = field(default_factory=dict)  # eval=[...]: run on the folder after generation
    reference: Any = (
        None  # evaluation.ReferencePlan: the moss=off twin the fidelity evaluators compare against
    )


def prepare(cfg: DictConfig) -> Prepared:
    """Check everything, build the light objects, claim the run folder (rank 0 writes its fingerprint)."""
    check_settings(cfg)
    check_model_files(cfg.model)
    fallbacks: list[str] = []
    method = check_machine(cfg, build_method(cfg), fallbacks)
    generation = build_object(cfg.generation, "generation")
    dataset = build_object(cfg.data, "data")
    check_conditions(cfg, dataset)
    evaluators = build_evaluators(cfg)  # every weight file and benchmark prompt set, before any image
    check_evaluators(evaluators, dataset.items)
    choices = HydraConfig.get().runtime.choices
    run_info = {
        "run_name": cfg.run_name,
        "model": choices.get("model"),
        "moss": method.name,
        "attn": choices.get("attn"),
        "dispatch": choices.get("dispatch"),
    }
    run_dir = Path(cfg.paths.output_dir)
    fp = fingerprint(cfg, method, generation)
    new = check_run_folder(run_dir, fp, dataset, generation.aspect_ratio)
    if new and int(os.environ.get("LOCAL_RANK", "0")) == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run_dir / FINGERPRINT, json.dumps(fp, indent=2, default=str) + "\n")
        RunDirectory(run_dir).write_config(OmegaConf.to_yaml(cfg, resolve=True))
    reference = plan_reference(cfg, method.name, run_dir) if needs_reference(evaluators) else None
    return Prepared(run_dir, method, generation, dataset, run_info, fallbacks, new, evaluators, reference)
