"""The trained testbed, shipped with this package: ``moss_models.load("testbed")``.

``tools/train_testbed.py`` trains it on the procedural Shapes data (VAE stage, then transformer + word embeddings)
and exports four files, which live here as package data under ``weights/`` (the model card,
``weights/README.md``, says how they were made and how well they score):

- ``testbed.json``: the card the loader reads: the spec (config, VAE, scale sides), the vocabulary in id order,
  the file names and the training record;
- ``vae.safetensors``, ``transformer.safetensors``: the Infinity VAE and transformer under the release key names
  (the same strict loaders as the official checkpoints);
- ``text.safetensors``: the word embeddings of the :class:`~moss_models.testbed.text.WordTextEncoder`.

``checkpoints=<folder>`` loads another training run's export instead (the same four files), e.g. a longer run's
``outputs/testbed``. Its shapes must be the shipped spec's where the registry states them up front (scale sides,
depth, block groups); widths may differ.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from moss_models.core.checkpoints import (
    CheckpointMismatchError,
    CheckpointNotFoundError,
    load_into,
    load_state_dict,
)
from moss_models.core.generator import NextScaleGenerator
from moss_models.infinity.loading import DTYPES, load_transformer, load_vae
from moss_models.testbed.config import ModelSpec, make_spec, spec_from_record, spec_record
from moss_models.testbed.text import WordTextEncoder

TRAINED_NAME = "testbed"
#: the shipped export (package data)
WEIGHTS_DIR = Path(__file__).with_name("weights")
VAE_FILE, TRANSFORMER_FILE, TEXT_FILE, CARD_FILE = (
    "vae.safetensors",
    "transformer.safetensors",
    "text.safetensors",
    "testbed.json",
)
ROLES = {"vae": VAE_FILE, "transformer": TRANSFORMER_FILE, "text": TEXT_FILE}


def _save(path: Path, tensors: dict[str, torch.Tensor], meta: dict[str, str] | None) -> None:
    from safetensors.torch import save_file

    # clone: the VAE registers its bit mask under two names (the release key set), which safetensors refuses to
    # store as one shared tensor; written beside and renamed, so a reader never sees half a file
    tmp = path.with_name(path.name + ".tmp")
    save_file({k: v.detach().cpu().clone() for k, v in tensors.items()}, str(tmp), metadata=meta)
    tmp.replace(path)


def save_vae(folder: str | Path, vae: torch.nn.Module, meta: dict[str, str] | None = None) -> Path:
    """The VAE stage's export: ``<folder>/vae.safetensors`` (``meta``: safetensors string metadata)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    _save(folder / VAE_FILE, vae.state_dict(), meta)
    return folder / VAE_FILE


def save_testbed(
    folder: str | Path,
    spec: ModelSpec,
    transformer: torch.nn.Module,
    text: WordTextEncoder,
    *,
    vae: torch.nn.Module | None = None,
    meta: dict[str, str] | None = None,
    card: dict | None = None,
) -> list[Path]:
    """Write a testbed export :func:`load_trained_testbed` reads: transformer and text weights, the VAE's when
    given (else the folder must hold it from the VAE stage), and the card (spec, vocabulary, files, plus
    ``card``'s extra entries such as the training record). Returns the files written."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = [save_vae(folder, vae, meta)] if vae is not None else []
    _save(folder / TRANSFORMER_FILE, transformer.state_dict(), meta)
    _save(folder / TEXT_FILE, text.state_dict(), meta)
    record = {**spec_record(spec), "vocabulary": list(text.vocabulary), "files": dict(ROLES), **(card or {})}
    tmp = folder / (CARD_FILE + ".tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    tmp.replace(folder / CARD_FILE)
    return [*written, folder / TRANSFORMER_FILE, folder / TEXT_FILE, folder / CARD_FILE]


def export_files(root: str | Path | None = None) -> dict[str, Path]:
    """``{card, vae, transformer, text}`` paths of a testbed export (``root``; default: the shipped one).

    Raises :class:`CheckpointNotFoundError` naming every missing file.
    """
    folder = Path(root).expanduser() if root else WEIGHTS_DIR
    card = folder / CARD_FILE
    names = dict(ROLES)
    if card.is_file():
        names.update(read_card(card).get("files", {}))
    paths = {"card": card, **{role: folder / names[role] for role in ROLES}}
    missing = [f"{role}: {p}" for role, p in paths.items() if not p.is_file()]
    if missing:
        where = "the shipped testbed (package data of moss-models)" if root is None else f"checkpoints={root}"
        raise CheckpointNotFoundError(
            f"{where} lacks {len(missing)} of its files ({'; '.join(missing)}). A testbed export is what "
            "tools/train_testbed.py writes to its out_dir after stage=transformer: testbed.json, vae.safetensors, "
            "transformer.safetensors and text.safetensors."
        )
    return paths


def read_card(path: str | Path) -> dict:
    try:
        card = json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:
        raise CheckpointMismatchError(f"testbed card {path} cannot be read: {err}") from None
    if not isinstance(card, dict) or "config" not in card or "vocabulary" not in card:
        raise CheckpointMismatchError(f"testbed card {path} has no 'config' or 'vocabulary'")
    return card


def block_dtype_change(dtype: str | torch.dtype | None) -> dict:
    """``dtype`` (a name of :data:`DTYPES` or a torch dtype) as a config change of the blocks; ``{}`` for None."""
    if dtype is None:
        return {}
    return {"block_dtype": DTYPES[dtype] if isinstance(dtype, str) else dtype}


def card_spec(card: dict, path: str | Path, **config_changes) -> ModelSpec:
    """The spec a card describes, checked against what the registry states without reading it."""
    try:
        spec = spec_from_record(card, **config_changes)
    except ValueError as err:
        raise CheckpointMismatchError(f"testbed card {path}: {err}") from None
    shipped = make_spec().config
    got = spec.config
    for field in ("scale_sides", "depth", "block_chunks"):
        if getattr(got, field) != getattr(shipped, field):
            raise CheckpointMismatchError(
                f"testbed card {path} has {field}={getattr(got, field)}, the testbed's is "
                f"{getattr(shipped, field)}: model=testbed loads exports of the shipped schedule and depth (other "
                "shapes: train with the same model.* settings and generate through moss_models.testbed directly)"
            )
    return spec


def text_encoder_of(spec: ModelSpec, vocabulary, *, strict: bool = False, device="cpu") -> WordTextEncoder:
    """The spec's word encoder over ``vocabulary`` (freshly initialised)."""
    cfg = spec.config
    return WordTextEncoder(
        vocabulary, cfg.text_channels, cfg.text_maxlen, layers=spec.text_layers, heads=spec.text_heads,
        strict=strict, device=device,
    )  # fmt: skip


def load_text_encoder(card: dict, spec: ModelSpec, path: Path, device) -> WordTextEncoder:
    encoder = text_encoder_of(spec, card["vocabulary"], device=device)
    load_into(encoder, load_state_dict(path), f"testbed text checkpoint {path}")
    return encoder.eval()


def load_trained_testbed(
    root: str | Path | None = None,
    device: torch.device | str = "cpu",
    *,
    dtype: str | torch.dtype | None = None,
    name: str = TRAINED_NAME,
) -> NextScaleGenerator:
    """The trained testbed generator from an export folder (default: the shipped weights)."""
    from moss_models.testbed.model import InfinityTestbedFamily

    paths = export_files(root)
    card = read_card(paths["card"])
    spec = card_spec(card, paths["card"], **block_dtype_change(dtype))
    transformer = load_transformer(spec.config, paths["transformer"], device).eval()
    vae = load_vae(spec.config, paths["vae"], device)
    text = load_text_encoder(card, spec, paths["text"], device)
    family = InfinityTestbedFamily(transformer, vae, text)
    return NextScaleGenerator(family, name=name, default_resolution=spec.config.max_resolution)
