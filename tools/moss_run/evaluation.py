"""The quality step of the main job and of ``tools/evaluate.py``: evaluators from ``conf/eval``, checked up front.

``eval=[fidelity,geneval]`` composes one config per evaluator under ``cfg.eval.<name>``; :func:`build_evaluators`
instantiates them (cheap: models load inside ``evaluate``), and :func:`check_evaluators` turns every missing
weight file of every evaluator into one :class:`~moss_run.errors.UserError` **before any image is generated**.
Benchmark evaluators need their prompt set (``eval=[geneval]`` needs ``data=geneval``), also checked up front.

Fidelity needs the ``moss=off`` twin of the run: the same model, generation settings, prompts and seeds.
``evaluation.reference`` names an existing run folder; left null, the main job generates the twin itself into a
shared cache folder, ``<paths.log_dir>/references/<model>-<key>``, where ``<key>`` hashes everything that decides
the baseline's images (the twin's fingerprint and the prompt set, not ``data.limit``), so every method of a sweep
reuses one baseline and a larger ``data.limit`` resumes it. A run that is itself the baseline is its own reference.

:func:`evaluate_run` runs each evaluator on a finished run folder, writes ``<run>/eval/<name>.json`` (atomically,
via :class:`~moss_eval.quality.base.EvalResult`), logs scores and tables to W&B when a W&B run is open, and prints
one line per evaluator.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra.utils
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from moss_eval import RunDirectory
from moss_eval.quality.base import EvalInput, EvalResult, MissingWeightsError, check_weights
from moss_run.errors import UserError

log = logging.getLogger("moss.run")

# Evaluators that score a benchmark's own prompts, and the data config that provides them.
BENCHMARK_DATA = {"geneval": "geneval", "dpg": "dpg", "shapes": "shapes"}
REFERENCE_EVALUATORS = ("fidelity",)  # evaluators that compare each image with its moss=off twin
REFERENCE_FILE = (
    "reference.json"  # <run>/eval/reference.json: which folder the fidelity step compared against
)


def requested(cfg: DictConfig) -> list[str]:
    node = cfg.get("eval")
    return list(node.keys()) if node else []


def build_evaluators(cfg: DictConfig) -> dict[str, Any]:
    """Instantiate ``cfg.eval.<name>`` for every requested evaluator (no model is loaded here)."""
    from moss_run.prepare import build_object

    evaluators = {}
    for name in requested(cfg):
        ev = build_object(cfg.eval[name], f"eval.{name}")
        if getattr(ev, "name", name) != name:
            raise UserError(f"eval.{name}: its _target_ builds the {ev.name!r} evaluator, not {name!r}")
        evaluators[name] = ev
    return evaluators


def check_evaluators(evaluators: dict[str, Any], items=None) -> None:
    """Every weight file of every evaluator, and the prompt set each benchmark evaluator needs."""
    try:
        check_weights(evaluators.values())
    except MissingWeightsError as err:
        raise UserError(str(err)) from None
    if items is None:
        return
    for name, data in BENCHMARK_DATA.items():
        if name not in evaluators:
            continue
        foreign = [it.id for it in items if (it.benchmark or {}).get("name") != name]
        if foreign:
            chosen = HydraConfig.get().runtime.choices.get("data") if HydraConfig.initialized() else None
            raise UserError(
                f"eval=[{name}] scores the {name} prompt set, but data={chosen} gives other prompts (e.g. id "
                f"{foreign[0]!r}); use data={data} (data.limit=N for the first N prompts)"
            )


# ------------------------------------------------------------------------------------------ the reference


def needs_reference(evaluators: dict[str, Any]) -> bool:
    return any(name in evaluators for name in REFERENCE_EVALUATORS)


def _baseline_moss_node() -> DictConfig:
    from moss_run.config import project_root

    return OmegaConf.load(Path(project_root()) / "conf" / "moss" / "off.yaml")


@dataclass
class ReferencePlan:
    """Where the twin is, and the config that generates it (None: it is an existing folder or the run itself)."""

    path: Path
    cfg: DictConfig | None


def plan_reference(cfg: DictConfig, method_name: str, run_dir: Path) -> ReferencePlan:
    """The ``moss=off`` twin of this run (see the module docstring)."""
    given = cfg.get("evaluation", {}).get("reference")
    if given:
        path = Path(str(given)).expanduser()
        if not (path / "records").is_dir() and not (path / "records.jsonl").is_file():
            raise UserError(
                f"evaluation.reference={given}: no run folder there (it needs records/ and images/ of a moss=off "
                "run with the same prompts and seeds); leave it null to generate the twin"
            )
        return ReferencePlan(path, None)
    if method_name == "off":
        return ReferencePlan(run_dir, None)
    twin = copy.deepcopy(cfg)
    OmegaConf.set_struct(twin, False)
    twin.moss = _baseline_moss_node()
    twin.logger = None  # the twin is a cache, not an experiment
    twin.eval = None
    model = HydraConfig.get().runtime.choices.get("model") or str(cfg.model.name)
    twin.run_name = f"{model}-off-reference"
    data = OmegaConf.to_container(cfg.data, resolve=True)
    data.pop("limit", None)  # a longer prompt list resumes the same folder
    plain_model = OmegaConf.to_container(cfg.model, resolve=True)
    plain_model.pop("checkpoints", None)
    gen = OmegaConf.to_container(cfg.generation, resolve=True)
    gen.pop("batch_size", None)
    gen.pop("cuda_graphs", None)
    # the twin's fingerprint holds these: new code versions or new weights, a new folder
    from moss_run.models import weights_identity
    from moss_run.prepare import code_versions

    key = json.dumps(
        {"model": plain_model, "weights": weights_identity(cfg.model), "generation": gen, "data": data,
         "attn": cfg.attn.get("backend"), "code": code_versions()},
        sort_keys=True, default=str,
    )  # fmt: skip
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    path = Path(str(cfg.paths.log_dir)) / "references" / f"{model}-{digest}"
    twin.paths.output_dir = str(path)
    return ReferencePlan(path, twin)


def write_reference_note(run_dir: Path, reference: Path) -> None:
    from moss_eval import atomic_write_text

    (run_dir / "eval").mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / "eval" / REFERENCE_FILE, json.dumps({"reference": str(reference)}) + "\n")


def recorded_reference(run_dir: Path) -> Path | None:
    path = run_dir / "eval" / REFERENCE_FILE
    return Path(json.loads(path.read_text())["reference"]) if path.is_file() else None


# ------------------------------------------------------------------------------------------ evaluating


def eval_device(cfg: DictConfig) -> str:
    import torch

    device = str(cfg.get("evaluation", {}).get("device", "auto"))
    accelerator = str(cfg.get("trainer", {}).get("accelerator", "auto"))
    if device == "auto":
        return "cuda" if torch.cuda.is_available() and accelerator != "cpu" else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"evaluation.device={device} needs a CUDA GPU and torch sees none; use auto or cpu")
    return device


def evaluate_run(
    run_dir: Path,
    evaluators: dict[str, Any],
    *,
    reference: Path | None,
    device: str,
    batch_size: int,
    wandb_run=None,
) -> dict[str, EvalResult]:
    """Score a finished run folder with every evaluator; returns the results (also written and logged)."""
    records = [r.to_dict() for r in RunDirectory(run_dir).read_records()]
    if not records:
        raise UserError(f"{run_dir} holds no finished images to evaluate")
    records.sort(key=lambda r: (r.get("index") is None, r.get("index"), str(r.get("id"))))
    results = {}
    for name, ev in evaluators.items():
        inputs = EvalInput(run_dir, records, reference, device=device, batch_size=batch_size)
        result = ev.evaluate(inputs)
        path = result.write(run_dir)
        results[name] = result
        shown = ", ".join(f"{k} {_fmt(v)}" for k, v in list(result.scores.items())[:8])
        print(f"moss eval: {name}: {shown} ({len(records)} images; {path})", flush=True)
        if wandb_run is not None:
            _log_result(wandb_run, result)
    return results


def _fmt(v: Any) -> str:
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def _log_result(run, result: EvalResult) -> None:
    import wandb

    scores = {f"eval/{result.name}/{k}": v for k, v in result.scores.items() if isinstance(v, int | float)}
    run.summary.update(scores)
    logged = {}
    for table, rows in result.tables.items():
        if not rows:
            continue
        columns = list(rows[0].keys())
        logged[f"eval/{result.name}/{table}"] = wandb.Table(
            columns=columns, data=[[_cell(row.get(c)) for c in columns] for row in rows]
        )
    if logged:
        run.log(logged)


def _cell(v: Any) -> Any:
    return v if v is None or isinstance(v, int | float | str | bool) else json.dumps(v, default=str)


def quality_step(cfg: DictConfig, prepared, run) -> Any:
    """The main job's ``after`` callback: generate the ``moss=off`` twin if fidelity needs it and it is not there,
    then evaluate the run folder. The twin's images are generated first, here, before the run's own generation, so
    a bad twin setting stops the job before the run's images are made."""
    from moss_run.prepare import prepare

    plan = prepared.reference
    if plan is not None and plan.cfg is not None:
        log.info("fidelity: the moss=off twin of this run goes to %s", plan.path)
        twin = prepare(plan.cfg)
        run(plan.cfg, twin)
    reference = plan.path if plan is not None else None
    device = eval_device(cfg)
    batch = int(cfg.get("evaluation", {}).get("batch_size", 8))

    def after(wandb_run) -> None:
        if reference is not None:
            write_reference_note(prepared.run_dir, reference)
        evaluate_run(
            prepared.run_dir, prepared.evaluators, reference=reference, device=device, batch_size=batch,
            wandb_run=wandb_run,
        )  # fmt: skip

    return after


def evaluate_folder(cfg: DictConfig) -> dict[str, EvalResult]:
    """``tools/evaluate.py``: check everything, then evaluate an existing run folder."""
    run_dir = Path(str(cfg.run_dir)).expanduser()
    if not (run_dir / "records").is_dir():
        raise UserError(f"run_dir={run_dir}: not a run folder of tools/run.py (no records/ there)")
    evaluators = build_evaluators(cfg)
    if not evaluators:
        raise UserError("eval is empty: name the evaluators to run, e.g. 'eval=[fidelity]' (see conf/eval)")
    check_evaluators(evaluators)
    records = RunDirectory(run_dir).read_records()
    for name in BENCHMARK_DATA:
        if name in evaluators and not any(
            (r.extra.get("benchmark") or {}).get("name") == name for r in records
        ):
            raise UserError(
                f"eval=[{name}]: the images in {run_dir} were not generated from the {name} prompts (their "
                f"records have no {name} benchmark entry); generate them with data={BENCHMARK_DATA[name]}"
            )
    reference = None
    if needs_reference(evaluators):
        given = cfg.get("evaluation", {}).get("reference")
        if given:
            reference = Path(str(given)).expanduser()
        elif recorded_reference(run_dir) is not None:
            reference = recorded_reference(run_dir)
        elif records and all(r.moss == "off" for r in records):
            reference = run_dir
        else:
            raise UserError(
                f"fidelity compares each image with its moss=off twin, and {run_dir} records none: pass "
                "evaluation.reference=<the moss=off run folder with the same prompts and seeds>, or rerun tools/run.py "
                "with 'eval=[fidelity]', which generates the twin"
            )
        if not (reference / "records").is_dir():
            raise UserError(f"evaluation.reference={reference}: not a run folder (no records/ there)")
    logger = hydra.utils.instantiate(cfg.logger) if cfg.get("logger") else None
    from lightning.pytorch.loggers import WandbLogger

    wandb_run = logger.experiment if isinstance(logger, WandbLogger) else None
    try:
        return evaluate_run(
            run_dir, evaluators, reference=reference, device=eval_device(cfg),
            batch_size=int(cfg.get("evaluation", {}).get("batch_size", 8)), wandb_run=wandb_run,
        )  # fmt: skip
    finally:
        if wandb_run is not None:
            import wandb

            wandb.finish()
