"""Distribution and alignment measures: FID against a folder of reference images, and CLIP score.

**FID** is torchmetrics' ``FrechetInceptionDistance`` fed by torch-fidelity's InceptionV3 (torchmetrics'
``NoTrainInceptionV3``, a subclass of torch-fidelity's ``FeatureExtractorInceptionV3``) with weights from a
LOCAL file, ``pt_inception-2015-12-05-6726825d.pth`` (torch-fidelity's release
``weights-inception-2015-12-05-6726825d.pth``; the same tensors). That class reads the path it is given
(``feature_extractor_weights_path``) with ``torch.load(..., weights_only=False)``, i.e. it would unpickle the
file; so the file is read here with ``weights_only=True`` and the class is handed an in-memory re-serialisation of
those plain tensors, never the file itself. ``feature_dims`` picks torch-fidelity's feature layer: 2048 (the
standard FID pool features) or 64 / 192 / 768 (earlier pooled layers, which torch-fidelity provides as such; their
FIDs are not comparable with the standard one). Images are resized to 299 px inside the network;
``antialias=False`` (the default) uses torch-fidelity's TensorFlow-1-compatible bilinear resize, which reproduces
the original TF FID, while torchmetrics' own default is an anti-aliased resize (different numbers). With fewer
images than feature dimensions the covariances are singular and FID is ill-conditioned: a warning says so.

**CLIP score** is torchmetrics' definition, ``max(100 · cos(image, text), 0)`` with the features of a transformers
``CLIPModel``. torchmetrics 1.9's ``CLIPScore`` only takes a fixed list of hub names (or a callable), and with
transformers 5 it fails outright: ``get_image_features`` now returns a model output, not a tensor. So the formula is
computed here from a CLIP model and processor loaded from a local folder, exactly as torchmetrics does
(processor on the uint8 ``(3, H, W)`` images; text padded, truncated to the model's positions); the tests check it
against torchmetrics' ``CLIPScore`` run on the same model through an adapter. Per image the value is
``max(100·cos, 0)``; the headline ``clip_score`` is torchmetrics' aggregate, ``max(mean(100·cos), 0)`` (the same
as the mean of per-image values unless some cosine is negative).
"""

from __future__ import annotations

import io
import logging
import os
import statistics
from pathlib import Path
from typing import Any

import torch

from moss_eval.quality.base import EvalInput, EvalResult, WeightFile

log = logging.getLogger(__name__)

__all__ = [
    "FID_FEATURE_DIMS",
    "IMAGE_EXTENSIONS",
    "CLIPScoreEvaluator",
    "FIDEvaluator",
    "clip_cosines",
    "load_clip",
    "load_inception",
]

FID_FEATURE_DIMS = (64, 192, 768, 2048)
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
INCEPTION_FILE = "pt_inception-2015-12-05-6726825d.pth"


def _png_uint8_chw(path: str | os.PathLike) -> torch.Tensor:
    from moss_eval.sweep import load_png  # pillow, imported on first use

    return load_png(path).permute(2, 0, 1).contiguous()


# ================================================================================================ FID


def load_inception(weights: str | os.PathLike, feature_dims: int = 2048, antialias: bool = False):
    """torchmetrics' ``NoTrainInceptionV3`` (torch-fidelity's network) with weights from a local file.

    The file is read with ``weights_only=True``; the network is given an in-memory copy of those tensors (see the
    module docstring). Takes uint8 ``(B, 3, H, W)``, returns ``(B, feature_dims)``; has ``num_features``.
    """
    if feature_dims not in FID_FEATURE_DIMS:
        raise ValueError(
            f"eval.fid.feature_dims={feature_dims} is not a torch-fidelity InceptionV3 feature layer; "
            f"allowed: {', '.join(map(str, FID_FEATURE_DIMS))}"
        )
    path = Path(weights).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"eval.fid.inception_weights={path} does not exist: it must be torch-fidelity's {INCEPTION_FILE}"
        )
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(
            f"eval.fid.inception_weights={path} is not a state dict of tensors ({INCEPTION_FILE})"
        )
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    from torchmetrics.image.fid import NoTrainInceptionV3

    try:
        net = NoTrainInceptionV3(
            name="inception-v3-compat",
            features_list=[str(feature_dims)],
            feature_extractor_weights_path=buffer,
            antialias=antialias,
        )
    except RuntimeError as err:  # load_state_dict: missing / unexpected keys or shapes
        raise ValueError(
            f"eval.fid.inception_weights={path} does not fit torch-fidelity's InceptionV3: {err}"
        ) from err
    net.num_features = feature_dims  # torchmetrics reads it instead of running a dummy 299² image
    return net


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def _same_size_batches(paths: list[Path], batch_size: int):
    """uint8 ``(B, 3, H, W)`` batches of consecutive images of the same size (a batch must be one tensor)."""
    batch: list[torch.Tensor] = []
    for path in paths:
        image = _png_uint8_chw(path)
        if batch and (image.shape != batch[0].shape or len(batch) >= batch_size):
            yield torch.stack(batch)
            batch = []
        batch.append(image)
    if batch:
        yield torch.stack(batch)


class FIDEvaluator:
    """FID of a run's images against a folder of reference images (e.g. MJHQ-30K or COCO).

    Args:
        reference_images: a folder of reference images (searched recursively: png, jpg, jpeg, webp, bmp).
        inception_weights: ``pt_inception-2015-12-05-6726825d.pth``.
        feature_dims: 2048 (standard) or 64 / 192 / 768.
        antialias: False = torch-fidelity's TF-compatible resize to 299 (the standard FID); True = torchmetrics'.
        device: where the network runs; None uses ``inputs.device``.
        batch_size: images per forward pass; None uses ``inputs.batch_size``.
        feature_extractor: a module used instead of InceptionV3 (uint8 ``(B, 3, H, W)`` → ``(B, D)``); for tests
            and other feature spaces. ``inception_weights`` is then not read.
    """

    name = "fid"

    def __init__(
        self,
        reference_images: str | None,
        inception_weights: str | None = None,
        feature_dims: int = 2048,
        antialias: bool = False,
        device: str | None = None,
        batch_size: int | None = None,
        feature_extractor: torch.nn.Module | None = None,
    ):
        if feature_extractor is None and feature_dims not in FID_FEATURE_DIMS:
            raise ValueError(
                f"eval.fid.feature_dims={feature_dims} is not allowed; use one of {FID_FEATURE_DIMS}"
            )
        self.reference_images = reference_images
        self.inception_weights = inception_weights
        self.feature_dims = feature_dims
        self.antialias = antialias
        self.device = device
        self.batch_size = batch_size
        self.feature_extractor = feature_extractor

    def weight_files(self) -> list[WeightFile]:
        files = [
            WeightFile(
                key="eval.fid.reference_images",
                path=self.reference_images,
                what="a folder of reference images (e.g. MJHQ-30K from huggingface.co/datasets/playgroundai/"
                "MJHQ-30K, mjhq30k_imgs.zip)",
                kind="dir",
            )
        ]
        if self.feature_extractor is None:
            files.append(
                WeightFile(
                    key="eval.fid.inception_weights",
                    path=self.inception_weights,
                    what=f"InceptionV3 FID weights {INCEPTION_FILE} (github.com/toshas/torch-fidelity releases "
                    "v0.2.0: weights-inception-2015-12-05-6726825d.pth, same tensors)",
                )
            )
        return files

    def build_metric(self, device: str):
        """torchmetrics' ``FrechetInceptionDistance`` around the feature network."""
        from torchmetrics.image.fid import FrechetInceptionDistance

        if self.feature_extractor is not None:
            network = self.feature_extractor
        else:
            if not self.inception_weights:
                raise ValueError(f"eval.fid.inception_weights is not set: it must be {INCEPTION_FILE}")
            network = load_inception(self.inception_weights, self.feature_dims, self.antialias)
        # normalize=False: images go in as uint8, which InceptionV3 expects; a custom module gets them as such.
        return FrechetInceptionDistance(feature=network, normalize=False).to(device)

    def evaluate(self, inputs: EvalInput) -> EvalResult:
        device = self.device or inputs.device
        batch_size = self.batch_size or inputs.batch_size
        if not self.reference_images:
            raise ValueError("eval.fid.reference_images is not set: it must be a folder of reference images")
        folder = Path(self.reference_images).expanduser()
        if not folder.is_dir():
            raise FileNotFoundError(f"eval.fid.reference_images={folder} is not a folder")
        reference = _image_files(folder)
        generated = [inputs.image_path(r) for r in inputs.records]
        absent = [str(p) for p in generated if not p.is_file()]
        if absent:
            raise FileNotFoundError(
                f"eval.fid: {len(absent)} image(s) of {inputs.run_dir} are missing: {absent[:5]}"
            )
        for what, paths in (("reference images", reference), ("generated images", generated)):
            if len(paths) < 2:
                raise ValueError(f"eval.fid needs at least 2 {what}, found {len(paths)}")
        metric = self.build_metric(device)
        dims = int(metric.real_features_sum.numel())
        warnings = []
        for what, paths in (("reference", reference), ("generated", generated)):
            if len(paths) < dims:
                message = (
                    f"eval.fid: {len(paths)} {what} images for {dims}-d features: the covariance is singular "
                    "and FID is ill-conditioned (use at least as many images as feature dimensions)"
                )
                warnings.append(message)
                log.warning(message)
        with torch.no_grad():
            for real, paths in ((True, reference), (False, generated)):
                for batch in _same_size_batches(paths, batch_size):
                    metric.update(batch.to(device), real=real)
            fid = float(metric.compute())
        return EvalResult(
            name=self.name,
            scores={"fid": fid, "images": len(generated), "reference_images": len(reference)},
            info={
                "reference_images": str(folder),
                "feature_dims": dims,
                "feature_extractor": "custom module"
                if self.feature_extractor is not None
                else f"torch-fidelity InceptionV3 ({self.inception_weights})",
                "resize": "anti-aliased bilinear (torchmetrics)"
                if self.antialias
                else "TF1-compatible bilinear (torch-fidelity)",
                "warnings": warnings,
            },
        )


# ================================================================================================ CLIP score


def load_clip(folder: str | os.PathLike, device: str | torch.device = "cpu"):
    """``(CLIPModel, CLIPProcessor)`` from a local transformers folder (nothing is downloaded)."""
    from transformers import CLIPModel, CLIPProcessor

    path = Path(folder).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(
            f"eval.clip_score.model={path} is not a folder (a transformers CLIP checkpoint)"
        )
    model = (
        CLIPModel.from_pretrained(str(path), local_files_only=True).to(device).eval().requires_grad_(False)
    )
    processor = CLIPProcessor.from_pretrained(str(path), local_files_only=True)
    return model, processor


def _features(output: Any) -> torch.Tensor:
    # transformers 5 returns a model output whose pooler_output is the projected embedding; 4.x returned it bare.
    return output if isinstance(output, torch.Tensor) else output.pooler_output


def clip_cosines(model, processor, images: list[torch.Tensor], prompts: list[str]) -> torch.Tensor:
    """Cosine of each uint8 ``(3, H, W)`` image with its prompt, as torchmetrics' CLIPScore computes it, ``(N,)``."""
    device = next(model.parameters()).device
    pixel_values = processor(images=[im.cpu() for im in images], return_tensors="pt", padding=True)[
        "pixel_values"
    ]
    text = processor(text=list(prompts), return_tensors="pt", padding=True)
    max_positions = model.config.text_config.max_position_embeddings
    ids, mask = text["input_ids"][..., :max_positions], text["attention_mask"][..., :max_positions]
    if text["input_ids"].shape[-1] > max_positions:
        log.warning("clip_score: a prompt is longer than %d tokens and is truncated", max_positions)
    with torch.no_grad():
        image_features = _features(model.get_image_features(pixel_values=pixel_values.to(device)))
        text_features = _features(
            model.get_text_features(input_ids=ids.to(device), attention_mask=mask.to(device))
        )
    image_features = image_features / image_features.norm(p=2, dim=-1, keepdim=True)
    text_features = text_features / text_features.norm(p=2, dim=-1, keepdim=True)
    return (image_features * text_features).sum(-1).float().cpu()


class CLIPScoreEvaluator:
    """CLIP score (torchmetrics' definition) of each image for its prompt.

    Args:
        model: a local transformers CLIP folder (e.g. openai/clip-vit-large-patch14, torchmetrics' default).
        device: where the model runs; None uses ``inputs.device``.
        batch_size: images per forward pass; None uses ``inputs.batch_size``.
    """

    name = "clip_score"

    def __init__(self, model: str | None, device: str | None = None, batch_size: int | None = None):
        self.model = model
        self.device = device
        self.batch_size = batch_size
        self._loaded = None

    def weight_files(self) -> list[WeightFile]:
        return [
            WeightFile(
                key="eval.clip_score.model",
                path=self.model,
                what="a transformers CLIP folder, e.g. huggingface.co/openai/clip-vit-large-patch14 (config.json, "
                "model.safetensors, preprocessor_config.json, tokenizer files)",
                kind="dir",
                contains=("config.json", "model.safetensors"),
            )
        ]

    def load(self, device: str = "cpu"):
        if self._loaded is None:
            if not self.model:
                raise ValueError(
                    "eval.clip_score.model is not set: it must be a local transformers CLIP folder"
                )
            self._loaded = load_clip(self.model, device)
        return self._loaded

    def evaluate(self, inputs: EvalInput) -> EvalResult:
        device = self.device or inputs.device
        model, processor = self.load(device)
        batch_size = max(1, int(self.batch_size or inputs.batch_size))
        records = inputs.records
        cosines: list[float] = []
        for start in range(0, len(records), batch_size):
            batch = records[start : start + batch_size]
            images = [_png_uint8_chw(inputs.image_path(r)) for r in batch]
            cosines += clip_cosines(model, processor, images, [r["prompt"] for r in batch]).tolist()
        per_image = {
            str(r["id"]): {"clip_score": max(100.0 * c, 0.0), "cosine": c}
            for r, c in zip(records, cosines, strict=True)
        }
        values = [v["clip_score"] for v in per_image.values()]
        return EvalResult(
            name=self.name,
            scores={
                # torchmetrics' CLIPScore.compute(): the mean of 100·cos, clamped at 0.
                "clip_score": max(100.0 * statistics.fmean(cosines), 0.0) if cosines else None,
                "clip_score_median": statistics.median(values) if values else None,
                "images": len(values),
            },
            per_image=per_image,
            info={
                "model": str(self.model),
                "formula": "max(100 * cos(image_features, text_features), 0) (torchmetrics CLIPScore)",
                "negative_cosines": sum(1 for c in cosines if c < 0),
            },
        )
