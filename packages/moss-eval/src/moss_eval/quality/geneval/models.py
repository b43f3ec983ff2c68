"""The real models behind GenEval's rules, on transformers instead of mmcv/mmdet and open_clip.

* :class:`Mask2FormerDetector`: Mask2Former Swin-S COCO instance segmentation, from a local transformers folder
  (``facebook/mask2former-swin-small-coco-instance``), post-processed into mmdet's per-class boxes and masks.
* :class:`ClipColorClassifier`: CLIP ViT-L/14 zero-shot colour naming, from a local transformers folder
  (``openai/clip-vit-large-patch14``), with the official templates and colour list.

**What differs from the official stack** (mmdet 2.x ``mask2former_swin-s-p4-w7-224_lsj_8x2_50e_coco`` +
open_clip ``ViT-L-14``/``openai`` through clip_benchmark), so GenEval numbers from here are close to, not
identical with, the official evaluator's; the official folder layout is written beside the results so the
official evaluator can be run on the same images for the exact number:

* Detector **weights**: the HF checkpoint is Facebook's Detectron2 Mask2Former Swin-S COCO instance model
  converted to transformers; the official one is mmdetection's own training of the same architecture and
  recipe (Swin-S, 50 epochs, LSJ). Same model family and classes, different trained weights.
* Detector **input**: both resize so the short side is 800 and the long side at most 1333 (this module forces
  that size, whatever the folder's ``preprocessor_config.json`` says; the mean/std come from that file, ImageNet's
  for the HF checkpoints, as mmdet's). mmcv resizes with OpenCV bilinear (no antialiasing) and pads to a multiple
  of 32; the HF processor resizes with torchvision (antialiased) and *stretches* to a multiple of 32. For square
  images (GenEval's) the size is 800×800 either way, a multiple of 32, so only the resampling filter differs.
* Detector **post-processing**: reimplemented here after mmdet 2.x ``MaskFormerFusionHead.instance_postprocess``,
  not HF's ``post_process_instance_segmentation`` (which resizes masks through a fixed 384×384 grid and by default
  returns one non-overlapping segment map): mask logits
  upsampled (bilinear) to the padded input, unpadded, upsampled to the original image; the top 100
  (query, class) pairs by class probability (softmax without the no-object column); binary masks ``logit > 0``;
  score = class probability × mean mask probability inside the mask; box = the mask's bounding box
  ``[x_min, y_min, x_max + 1, y_max + 1]``. Detections scoring at or below ``min_score`` are dropped.
* Colour **preprocessing**: open_clip resizes the crop (short side 224, PIL bicubic) and centre-crops 224; the
  HF processor does the same with torchvision's antialiased bicubic, so pixel values differ slightly. The official
  code runs CLIP under CUDA autocast (fp16); here it runs in float32.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from moss_eval.quality.geneval.metadata import COCO_CLASSES
from moss_eval.quality.geneval.rules import COLOR_TEMPLATES, Detections

if TYPE_CHECKING:
    import torch
    from PIL.Image import Image

__all__ = [
    "COCO_LABEL_ALIASES",
    "ClipColorClassifier",
    "Mask2FormerDetector",
    "class_index_map",
    "require_model_folder",
]

# mmdet's and Detectron2's COCO class names that GenEval renamed (object_names.txt), model name → GenEval name.
COCO_LABEL_ALIASES = {"mouse": "computer mouse", "remote": "tv remote", "keyboard": "computer keyboard"}
WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
# mmdet's test scale for the official detector config: short side 800, long side at most 1333.
TEST_SCALE = (800, 1333)
MAX_PER_IMAGE = 100  # mmdet test_cfg.max_per_image


def require_model_folder(
    folder: str | Path, key: str, what: str, files: Sequence[str] = ("config.json",)
) -> Path:
    """The folder as a Path, or FileNotFoundError naming the config key when it, a file or the weights are missing.

    Weights may be ``model.safetensors`` or ``pytorch_model.bin`` (or their sharded index); transformers reads
    ``.bin`` files with ``torch.load(weights_only=True)``.
    """
    path = Path(folder).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(f"{key}={folder}: no such folder (expected {what})")
    missing = [name for name in files if not (path / name).is_file()]
    if missing:
        raise FileNotFoundError(f"{key}={folder}: missing {', '.join(missing)} (expected {what})")
    if not any((path / name).is_file() for name in WEIGHT_FILES):
        raise FileNotFoundError(
            f"{key}={folder}: no weights; expected one of {', '.join(WEIGHT_FILES)} ({what})"
        )
    return path


def class_index_map(id2label: dict[int, str], key: str = "detector") -> list[int]:
    """For each model class id, its index in :data:`~.metadata.COCO_CLASSES` (GenEval's official order).

    Labels are matched by name (case and ``_``/space insensitive), with :data:`COCO_LABEL_ALIASES` for the
    three classes GenEval renamed; the map must be a bijection onto the 80 classes, whatever the model's own
    order. The HF COCO-instance checkpoints name the 80 classes in COCO's order, so the map is the identity.
    """
    official = {name: i for i, name in enumerate(COCO_CLASSES)}
    mapping: list[int] = []
    unknown = []
    for model_id in range(len(id2label)):
        if model_id not in id2label:
            raise ValueError(
                f"{key}: config id2label has no id {model_id} (ids must be 0..{len(id2label) - 1})"
            )
        name = " ".join(str(id2label[model_id]).replace("_", " ").lower().split())
        name = COCO_LABEL_ALIASES.get(name, name)
        if name not in official:
            unknown.append(str(id2label[model_id]))
            continue
        mapping.append(official[name])
    if unknown or len(id2label) != len(COCO_CLASSES) or len(set(mapping)) != len(COCO_CLASSES):
        raise ValueError(
            f"{key}: the detector's classes (config id2label, {len(id2label)} labels) must be the 80 COCO thing "
            f"classes; labels not among them: {unknown[:10]}{'...' if len(unknown) > 10 else ''}. Use a COCO "
            "instance-segmentation checkpoint (facebook/mask2former-swin-small-coco-instance), not a panoptic or "
            "fine-tuned one"
        )
    return mapping


def _mask_boxes(masks: torch.Tensor) -> torch.Tensor:
    """mmdet's ``mask2bbox``: ``(N, H, W)`` bool → ``(N, 4)`` float ``[x_min, y_min, x_max + 1, y_max + 1]``,
    zeros for an empty mask."""
    import torch

    _, h, w = masks.shape
    cols, rows = masks.any(dim=1), masks.any(dim=2)  # (N, W), (N, H)
    x0 = cols.int().argmax(dim=1)
    x1 = w - cols.flip(1).int().argmax(dim=1)
    y0 = rows.int().argmax(dim=1)
    y1 = h - rows.flip(1).int().argmax(dim=1)
    boxes = torch.stack([x0, y0, x1, y1], dim=1).float()
    return torch.where(cols.any(dim=1, keepdim=True), boxes, torch.zeros_like(boxes))


class Mask2FormerDetector:
    """GenEval's detector: Mask2Former COCO instance segmentation from a local transformers folder.

    ``folder`` holds ``config.json``, ``preprocessor_config.json`` and ``model.safetensors`` (or
    ``pytorch_model.bin``), e.g. ``facebook/mask2former-swin-small-coco-instance``. Its ``id2label`` is mapped
    onto GenEval's class order by :func:`class_index_map`. :meth:`detect` runs ``batch_size`` images at a time
    on ``device`` and returns mmdet-style :class:`~.rules.Detections`. ``min_score`` drops detections scoring at
    or below it before masks leave the device (the rules discard everything at or below 0.3 first, so
    ``min_score <= 0.3`` changes no GenEval verdict). ``test_scale`` is ``(short side, longest long side)`` of
    the model input, mmdet's ``(800, 1333)``: keep it for GenEval numbers (the tests shrink it for speed). See
    the module docstring for what differs from mmdet.
    """

    def __init__(
        self,
        folder: str | Path,
        device: str = "cpu",
        batch_size: int = 4,
        min_score: float = 0.0,
        test_scale: Sequence[int] = TEST_SCALE,
        key: str = "eval.geneval.detector",
    ):
        import torch
        from transformers import AutoImageProcessor, Mask2FormerConfig, Mask2FormerForUniversalSegmentation

        what = "a transformers Mask2Former COCO-instance folder, e.g. facebook/mask2former-swin-small-coco-instance"
        self.folder = require_model_folder(folder, key, what, ("config.json", "preprocessor_config.json"))
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        config = Mask2FormerConfig.from_pretrained(self.folder)
        self.class_map = torch.as_tensor(class_index_map(config.id2label, key))
        self.processor = AutoImageProcessor.from_pretrained(self.folder)
        use_safetensors = any((self.folder / n).is_file() for n in WEIGHT_FILES[:2])
        self.model = (
            Mask2FormerForUniversalSegmentation.from_pretrained(
                self.folder, config=config, use_safetensors=use_safetensors
            )
            .to(device)
            .eval()
        )
        self.device = device
        self.batch_size = batch_size
        self.min_score = min_score
        short, long = (int(v) for v in test_scale)
        if not 0 < short <= long:
            raise ValueError(
                f"test_scale must be (short side, long side) with 0 < short <= long, got {test_scale}"
            )
        self.test_scale = {"shortest_edge": short, "longest_edge": long}

    def detect(self, images: Sequence[Image]) -> list[Detections]:
        out = []
        for start in range(0, len(images), self.batch_size):
            out.extend(self._detect_batch(list(images[start : start + self.batch_size])))
        return out

    def _detect_batch(self, images: list[Image]) -> list[Detections]:
        import torch

        images = [im.convert("RGB") for im in images]
        inputs = self.processor(images=images, size=self.test_scale, do_resize=True, return_tensors="pt")
        pixel_values = inputs["pixel_values"].to(self.device)
        pixel_mask = inputs["pixel_mask"].to(self.device)
        with torch.inference_mode():
            out = self.model(pixel_values=pixel_values, pixel_mask=pixel_mask)
            class_logits, mask_logits = out.class_queries_logits, out.masks_queries_logits
            return [
                self._postprocess(class_logits[i], mask_logits[i], pixel_mask[i], (im.height, im.width))
                for i, im in enumerate(images)
            ]

    def _postprocess(
        self,
        class_logits: torch.Tensor,
        mask_logits: torch.Tensor,
        pixel_mask: torch.Tensor,
        size: tuple[int, int],
    ) -> Detections:
        import torch
        import torch.nn.functional as F

        # Mask logits (1/4 of the padded input) → padded input → valid (unpadded) region → original image.
        masks = F.interpolate(
            mask_logits[None].float(), size=pixel_mask.shape, mode="bilinear", align_corners=False
        )
        valid_h = int(pixel_mask.any(dim=1).sum())
        valid_w = int(pixel_mask.any(dim=0).sum())
        masks = F.interpolate(
            masks[:, :, :valid_h, :valid_w], size=size, mode="bilinear", align_corners=False
        )[0]
        # Per query: binary mask, its mean probability inside, its box (shared by every class a query is kept for).
        binary = masks > 0
        mask_score = (masks.sigmoid() * binary).flatten(1).sum(1) / (binary.flatten(1).sum(1) + 1e-6)
        boxes = _mask_boxes(binary)
        # The top (query, class) pairs by class probability, as mmdet's instance_postprocess.
        probs = class_logits.float().softmax(dim=-1)[:, :-1]
        num_classes = probs.shape[1]
        top_probs, top = probs.flatten().topk(min(MAX_PER_IMAGE, probs.numel()), sorted=False)
        query, model_class = top // num_classes, top % num_classes
        scores = top_probs * mask_score[query]
        keep = scores > self.min_score
        query, scores = query[keep], scores[keep]
        labels = self.class_map.to(scores.device)[model_class[keep]]
        rows = torch.cat([boxes[query], scores[:, None]], dim=1).cpu().numpy().astype(np.float32)
        kept_masks = binary[query].cpu().numpy()
        labels = labels.cpu().numpy()
        per_class_boxes = [rows[labels == c] for c in range(len(COCO_CLASSES))]
        per_class_masks = [kept_masks[labels == c] for c in range(len(COCO_CLASSES))]
        return Detections(boxes=per_class_boxes, masks=per_class_masks)


class ClipColorClassifier:
    """GenEval's colour classifier: CLIP zero-shot over the official colours and templates.

    ``folder`` is a local transformers CLIP folder (``config.json``, ``preprocessor_config.json``, tokenizer
    files, weights), e.g. ``openai/clip-vit-large-patch14``. For a class name, each colour's text embedding is
    the normalised mean of the normalised embeddings of the three :data:`~.rules.COLOR_TEMPLATES` (cached per
    class name, as clip_benchmark's ``zero_shot_classifier``); a crop gets the colour whose embedding is closest
    (cosine) to the crop's image embedding. See the module docstring for what differs from open_clip.
    """

    def __init__(self, folder: str | Path, device: str = "cpu", key: str = "eval.geneval.clip"):
        from transformers import CLIPModel, CLIPProcessor

        what = "a transformers CLIP folder, e.g. openai/clip-vit-large-patch14"
        self.folder = require_model_folder(folder, key, what, ("config.json", "preprocessor_config.json"))
        use_safetensors = any((self.folder / n).is_file() for n in WEIGHT_FILES[:2])
        self.model = CLIPModel.from_pretrained(self.folder, use_safetensors=use_safetensors).to(device).eval()
        self.processor = CLIPProcessor.from_pretrained(self.folder)
        self.device = device
        self._text_weights: dict[tuple[str, tuple[str, ...]], Any] = {}

    @staticmethod
    def _features(output: Any) -> torch.Tensor:
        import torch

        # transformers < 5 returns the projected features; 5 returns a ModelOutput with them as pooler_output.
        return output if isinstance(output, torch.Tensor) else output.pooler_output

    def _class_weights(self, classname: str, colors: tuple[str, ...]) -> torch.Tensor:
        import torch
        import torch.nn.functional as F

        cache_key = (classname, colors)
        if cache_key not in self._text_weights:
            texts = [t.format(c=c, cls=classname) for c in colors for t in COLOR_TEMPLATES]
            tokens = self.processor.tokenizer(texts, padding=True, return_tensors="pt").to(self.device)
            with torch.inference_mode():
                emb = self._features(self.model.get_text_features(**tokens)).float()
            emb = F.normalize(emb, dim=-1).view(len(colors), len(COLOR_TEMPLATES), -1).mean(dim=1)
            self._text_weights[cache_key] = F.normalize(emb, dim=-1)
        return self._text_weights[cache_key]

    def classify(self, crops: Sequence[Image], classname: str, colors: Sequence[str]) -> list[str]:
        import torch
        import torch.nn.functional as F

        if not crops:
            return []
        colors = tuple(colors)
        weights = self._class_weights(classname, colors)
        pixels = self.processor.image_processor(images=[c.convert("RGB") for c in crops], return_tensors="pt")
        with torch.inference_mode():
            feats = self._features(
                self.model.get_image_features(pixel_values=pixels["pixel_values"].to(self.device))
            )
        feats = F.normalize(feats.float(), dim=-1)
        return [colors[i] for i in (feats @ weights.T).argmax(dim=1).tolist()]
