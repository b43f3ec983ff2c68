"""Human-preference scores of text-to-image samples: HPSv2.1 and ImageReward, from local weights only.

**HPSv2.1** (Wu et al., 2023; ``github:tgxs002/HPSv2``) is an OpenCLIP ViT-H-14 fine-tuned on human preferences.
The score follows ``hpsv2/img_score.py``: the image and the prompt are encoded with L2-normalised features and
the score is their dot product (a cosine, no logit scale; typical values 0.2–0.35). The image preprocessing is the
one ``hpsv2`` builds with ``light_augmentation=True``: RGB → tensor in ``[0, 1]`` → resize the *tensor* bicubically
so its longer side is 224 → zero-pad to 224×224 centred → normalise with the OpenAI CLIP mean/std. Differences to
the official script, both deliberate: it runs under CUDA autocast (fp16), here the model runs in float32; and it
leaves the resize's anti-aliasing to torchvision's default, which is on since torchvision 0.17 and is passed
explicitly here (``antialias=True``), so older torchvision installs (no anti-aliasing on tensors) can differ in
the third decimal. The architecture comes from OpenCLIP by name (``open_clip.create_model``, no pretrained
download), its weights from ``HPS_v2.1_compressed.pt`` (a dict with ``state_dict``), loaded strictly with
``weights_only=True``; the tokenizer is OpenCLIP's own (it ships ``bpe_simple_vocab_16e6.txt.gz``, which the
``hpsv2`` pip package is known to miss).

**ImageReward** (Xu et al., 2023; ``github:THUDM/ImageReward``) is BLIP: a ViT-L/16 image encoder, a BERT-base
text encoder with cross-attention to the image tokens ("MED"), and an MLP head on the text [CLS] state::

    reward = (mlp(text_encoder(ids, mask, encoder_hidden_states=vit(image)).last_hidden_state[:, 0]) - mean) / std

with ``mean = 0.16717362830052426`` and ``std = 1.0333394966054072`` (``ImageReward/ImageReward.py``). The
official package pins old dependencies, so the model is rebuilt here from transformers' ``BlipVisionModel`` and
``BlipTextModel`` (same computation: pre-norm ViT with a final LayerNorm over all tokens; BERT layers with
bidirectional self-attention then cross-attention), and the ``ImageReward.pt`` keys are renamed onto them
(:data:`IMAGEREWARD_KEY_RULES`; the vision renaming is the one of transformers'
``convert_blip_original_pytorch_to_hf.py``, the text encoder keeps BERT's names). Loading is strict: a key of the
checkpoint with no place in the model, or a tensor the model needs that the checkpoint lacks, is an error naming
every such key; only the parts ImageReward never uses for scoring (BLIP's contrastive projections and the
position-id buffer) are skipped, and listed. The official vision tower is timm-style with LayerNorm ε = 1e-6
(transformers' BLIP default is 1e-5) and exact GELU; the text config is ``med_config.json`` (vocab 30524 =
bert-base-uncased + ``[DEC]`` + ``[ENC]``, cross-attention width 1024). Text: the bert-base-uncased tokenizer
from a local folder with BLIP's two added special tokens, ``padding="max_length", truncation=True,
max_length=35``. Image: ``Resize(224, bicubic)`` (on the PIL image) → ``CenterCrop(224)`` → tensor → CLIP mean/std.

Heavy libraries (open_clip, transformers, torchvision) are imported inside the functions that build models.
"""

from __future__ import annotations

import logging
import os
import re
import statistics
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from moss_eval.quality.base import EvalInput, EvalResult, WeightFile

log = logging.getLogger(__name__)

__all__ = [
    "CLIP_MEAN",
    "CLIP_STD",
    "IMAGEREWARD_KEY_RULES",
    "IMAGEREWARD_MEAN",
    "IMAGEREWARD_STD",
    "HPSEvaluator",
    "ImageRewardEvaluator",
    "ImageRewardModel",
    "hps_preprocess",
    "imagereward_official_state_dict",
    "imagereward_text_config",
    "imagereward_vision_config",
    "load_hps_model",
    "load_imagereward_state_dict",
]

# OpenAI CLIP normalisation (HPSv2 and ImageReward both use it).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

IMAGEREWARD_MEAN = 0.16717362830052426
IMAGEREWARD_STD = 1.0333394966054072
IMAGEREWARD_MAX_TOKENS = 35
# BLIP's tokenizer: bert-base-uncased plus these (``init_tokenizer`` in BLIP/ImageReward).
BLIP_EXTRA_TOKENS = {"bos_token": "[DEC]", "additional_special_tokens": ["[ENC]"]}


def _stats(name: str, values: list[float]) -> dict[str, float | None]:
    return {
        f"{name}_mean": statistics.fmean(values) if values else None,
        f"{name}_median": statistics.median(values) if values else None,
        "images": len(values),
    }


def _score_records(
    inputs: EvalInput, batch_size, score_images, device, key: str
) -> dict[str, dict[str, Any]]:
    """Record id → ``{key: score}``: ``score_images(images, prompts, device)`` over the run's images in batches of
    ``batch_size`` (None: the run's)."""
    per_image: dict[str, dict[str, Any]] = {}
    for batch in _batches(inputs.records, batch_size or inputs.batch_size):
        scores = score_images([inputs.load_image(r) for r in batch], [r["prompt"] for r in batch], device)
        for record, value in zip(batch, scores.tolist(), strict=True):
            per_image[str(record["id"])] = {key: value}
    return per_image


def _batches(records: list[dict[str, Any]], size: int):
    size = max(1, int(size))
    for start in range(0, len(records), size):
        yield records[start : start + size]


def _load_checkpoint(path: str | os.PathLike, key: str, what: str) -> Any:
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"{key}={path} does not exist: it must be {what}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # an unpickling refusal or a corrupt file: say which file and which key
        raise ValueError(f"{key}={path} could not be read as {what} with weights_only=True: {err}") from err


# ================================================================================================ HPSv2.1


def hps_preprocess(image, size: int = 224) -> torch.Tensor:
    """HPSv2's evaluation transform of one PIL image: ``(3, size, size)`` float, CLIP-normalised (see module doc)."""
    import torchvision.transforms.functional as TF
    from torchvision.transforms import InterpolationMode

    x = TF.to_tensor(image.convert("RGB"))
    h, w = x.shape[-2:]
    scale = size / float(max(h, w))
    if scale != 1.0:
        new_h, new_w = round(h * scale), round(w * scale)
        x = TF.resize(x, [new_h, new_w], interpolation=InterpolationMode.BICUBIC, antialias=True)
    h, w = x.shape[-2:]
    if (h, w) != (size, size):
        # hpsv2 pads only after a resize; a non-square image already at `size` would not fit the model, so it is
        # padded the same way here.
        pad_h, pad_w = size - h, size - w
        x = TF.pad(x, [pad_w // 2, pad_h // 2, pad_w - pad_w // 2, pad_h - pad_h // 2], fill=0)
    return TF.normalize(x, CLIP_MEAN, CLIP_STD)


def _register_open_clip_config(model_name: str, model_config: str | os.PathLike | None) -> None:
    import open_clip

    if model_config is None:
        if model_name not in open_clip.list_models():
            raise ValueError(
                f"eval.hps.model_name={model_name!r} is not an OpenCLIP architecture (HPSv2.1 is ViT-H-14); give "
                "eval.hps.model_config=/path/<model_name>.json to add one"
            )
        return
    path = Path(model_config).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"eval.hps.model_config={path} does not exist (an OpenCLIP model config JSON)"
        )
    if path.stem != model_name:
        # open_clip registers a config file under its file name.
        raise ValueError(
            f"eval.hps.model_config={path} registers the architecture {path.stem!r}, but "
            f"eval.hps.model_name={model_name!r}; name the file <model_name>.json"
        )
    open_clip.add_model_config(path)


def load_hps_model(
    checkpoint: str | os.PathLike,
    model_name: str = "ViT-H-14",
    model_config: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
):
    """``(model, tokenizer)``: the OpenCLIP ``model_name`` architecture with the HPS checkpoint's weights.

    ``checkpoint`` is ``HPS_v2.1_compressed.pt`` (a dict whose ``state_dict`` is the model's), loaded with
    ``weights_only=True`` and strictly: any missing or unexpected key is a ValueError naming them.
    ``model_config`` optionally adds an OpenCLIP config JSON named ``<model_name>.json`` (tests use a tiny one).
    """
    import open_clip

    _register_open_clip_config(model_name, model_config)
    ckpt = _load_checkpoint(
        checkpoint, "eval.hps.checkpoint", "the HPSv2.1 checkpoint (HPS_v2.1_compressed.pt)"
    )
    state = ckpt.get("state_dict") if isinstance(ckpt, Mapping) else None
    if not isinstance(state, Mapping):
        raise ValueError(
            f"eval.hps.checkpoint={checkpoint} is not an HPS checkpoint: expected a dict with a 'state_dict' entry"
        )
    model = open_clip.create_model(model_name, pretrained=None, device="cpu")
    result = model.load_state_dict(dict(state), strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(
            f"eval.hps.checkpoint={checkpoint} does not fit OpenCLIP {model_name}: "
            f"missing {list(result.missing_keys)}, unexpected {list(result.unexpected_keys)}"
        )
    model = model.to(device).eval().requires_grad_(False)
    tokenizer = open_clip.get_tokenizer(model_name)
    return model, tokenizer


class HPSEvaluator:
    """HPSv2.1 of each image for its prompt; ``scores`` has ``hps_mean`` / ``hps_median``.

    Args:
        checkpoint: ``HPS_v2.1_compressed.pt`` (huggingface.co/xswu/HPSv2).
        model_name: the OpenCLIP architecture (``ViT-H-14`` for HPSv2.1).
        model_config: an OpenCLIP config JSON named ``<model_name>.json`` for an architecture OpenCLIP lacks.
        device: where the model runs; None uses ``inputs.device``.
        batch_size: images per forward pass; None uses ``inputs.batch_size``.
    """

    name = "hps"

    def __init__(
        self,
        checkpoint: str | None,
        model_name: str = "ViT-H-14",
        model_config: str | None = None,
        device: str | None = None,
        batch_size: int | None = None,
    ):
        self.checkpoint = checkpoint
        self.model_name = model_name
        self.model_config = model_config
        self.device = device
        self.batch_size = batch_size
        self._model = None

    def weight_files(self) -> list[WeightFile]:
        files = [
            WeightFile(
                key="eval.hps.checkpoint",
                path=self.checkpoint,
                what="HPSv2.1 checkpoint HPS_v2.1_compressed.pt from huggingface.co/xswu/HPSv2",
            )
        ]
        if self.model_config:
            files.append(
                WeightFile(
                    key="eval.hps.model_config", path=self.model_config, what="OpenCLIP model config JSON"
                )
            )
        return files

    def load(self, device: str = "cpu"):
        """Build the model and tokenizer once (cached on the evaluator)."""
        if self._model is None:
            if not self.checkpoint:
                raise ValueError("eval.hps.checkpoint is not set: it must be HPS_v2.1_compressed.pt")
            self._model = load_hps_model(self.checkpoint, self.model_name, self.model_config, device)
        return self._model

    def score_images(self, images: list, prompts: list[str], device: str = "cpu") -> torch.Tensor:
        """HPS of each (PIL image, prompt) pair: the dot product of the normalised features, ``(N,)`` float."""
        model, tokenizer = self.load(device)
        size = model.visual.image_size
        size = size[0] if isinstance(size, tuple | list) else size
        pixels = torch.stack([hps_preprocess(im, size) for im in images]).to(device)
        tokens = tokenizer(list(prompts)).to(device)
        with torch.no_grad():
            image_features = model.encode_image(pixels, normalize=True)
            text_features = model.encode_text(tokens, normalize=True)
        return (image_features * text_features).sum(-1).float().cpu()

    def evaluate(self, inputs: EvalInput) -> EvalResult:
        device = self.device or inputs.device
        per_image = _score_records(inputs, self.batch_size, self.score_images, device, "hps")
        values = [v["hps"] for v in per_image.values()]
        return EvalResult(
            name=self.name,
            scores=_stats("hps", values),
            per_image=per_image,
            info={
                "checkpoint": str(self.checkpoint),
                "model_name": self.model_name,
                "formula": "dot(normalize(image_features), normalize(text_features)) (hpsv2/img_score.py)",
                "preprocess": "tensor bicubic resize of the longer side to the model size (antialias=True), "
                "zero pad to square, OpenAI CLIP mean/std",
                "precision": "float32 (the official script uses CUDA autocast)",
            },
        )


# ================================================================================================ ImageReward

# (official key under its prefix, transformers key under the module) with {i} a layer index and {p} a parameter.
IMAGEREWARD_KEY_RULES: dict[str, tuple[tuple[str, str, str], ...]] = {
    # official prefix -> module name in ImageRewardModel -> rules
    "vision": (
        ("blip.visual_encoder.", "cls_token", "embeddings.class_embedding"),
        ("blip.visual_encoder.", "pos_embed", "embeddings.position_embedding"),
        ("blip.visual_encoder.", "patch_embed.proj.{p}", "embeddings.patch_embedding.{p}"),
        ("blip.visual_encoder.", "blocks.{i}.norm1.{p}", "encoder.layers.{i}.layer_norm1.{p}"),
        ("blip.visual_encoder.", "blocks.{i}.attn.qkv.{p}", "encoder.layers.{i}.self_attn.qkv.{p}"),
        ("blip.visual_encoder.", "blocks.{i}.attn.proj.{p}", "encoder.layers.{i}.self_attn.projection.{p}"),
        ("blip.visual_encoder.", "blocks.{i}.norm2.{p}", "encoder.layers.{i}.layer_norm2.{p}"),
        ("blip.visual_encoder.", "blocks.{i}.mlp.fc1.{p}", "encoder.layers.{i}.mlp.fc1.{p}"),
        ("blip.visual_encoder.", "blocks.{i}.mlp.fc2.{p}", "encoder.layers.{i}.mlp.fc2.{p}"),
        ("blip.visual_encoder.", "norm.{p}", "post_layernorm.{p}"),
    ),
    # BLIP's MED text encoder keeps BERT's parameter names, which transformers' BlipTextModel shares.
    "text": (("blip.text_encoder.", "{rest}", "{rest}"),),
    "mlp": (("mlp.layers.", "{rest}", "{rest}"),),
}
# Official keys that scoring never reads: BLIP's contrastive projections and BERT's position-id buffer (a
# non-persistent buffer in transformers, rebuilt as arange).
IMAGEREWARD_UNUSED_KEYS = re.compile(
    r"^blip\.(vision_proj|text_proj)\.(weight|bias)$|^blip\.text_encoder\.embeddings\.position_ids$"
)

_PLACEHOLDERS = {"{i}": r"(?P<i>\d+)", "{p}": r"(?P<p>weight|bias)", "{rest}": r"(?P<rest>.+)"}


def _pattern(template: str) -> re.Pattern:
    regex = re.escape(template)
    for placeholder, group in _PLACEHOLDERS.items():
        regex = regex.replace(re.escape(placeholder), group)
    return re.compile(f"^{regex}$")


def _fill(template: str, match: re.Match) -> str:
    out = template
    for name, value in match.groupdict().items():
        out = out.replace("{" + name + "}", value)
    return out


_FORWARD = [
    (module, _pattern(prefix + official), module + "." + hf)
    for module, rules in IMAGEREWARD_KEY_RULES.items()
    for prefix, official, hf in rules
]
_INVERSE = [
    (module, _pattern(module + "." + hf), prefix + official)
    for module, rules in IMAGEREWARD_KEY_RULES.items()
    for prefix, official, hf in rules
]


def _official_to_model_key(key: str) -> str | None:
    for _, pattern, template in _FORWARD:
        match = pattern.match(key)
        if match:
            return _fill(template, match)
    return None


def _model_to_official_key(key: str) -> str:
    for _, pattern, template in _INVERSE:
        match = pattern.match(key)
        if match:
            return _fill(template, match)
    raise KeyError(f"no ImageReward checkpoint name for model key {key}")


def imagereward_vision_config(**overrides):
    """transformers ``BlipVisionConfig`` of ImageReward's BLIP ViT-L/16 at 224 px (timm LayerNorm ε = 1e-6)."""
    from transformers import BlipVisionConfig

    values = dict(
        hidden_size=1024,
        intermediate_size=4096,
        num_hidden_layers=24,
        num_attention_heads=16,
        image_size=224,
        patch_size=16,
        hidden_act="gelu",
        layer_norm_eps=1e-6,
        attention_dropout=0.0,
    )
    values.update(overrides)
    return BlipVisionConfig(**values)


def imagereward_text_config(**overrides):
    """transformers ``BlipTextConfig`` of ImageReward's ``med_config.json`` (BERT-base with cross-attention).

    ``is_decoder=True`` only makes transformers build the cross-attention layers; the forward pass is run with
    ``is_decoder=False`` (bidirectional self-attention), as BLIP's encoder mode does.
    """
    from transformers import BlipTextConfig

    values = dict(
        vocab_size=30524,
        hidden_size=768,
        encoder_hidden_size=1024,
        intermediate_size=3072,
        num_hidden_layers=12,
        num_attention_heads=12,
        max_position_embeddings=512,
        hidden_act="gelu",
        layer_norm_eps=1e-12,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        pad_token_id=0,
        is_decoder=True,
    )
    values.update(overrides)
    return BlipTextConfig(**values)


class ImageRewardModel(torch.nn.Module):
    """ImageReward on transformers' BLIP modules: ``vision`` (BlipVisionModel), ``text`` (BlipTextModel without
    pooler) and ``mlp`` (the official head, its Linear layers at indices 0, 2, 4, 6, 7 as in the checkpoint)."""

    def __init__(self, vision_config=None, text_config=None):
        super().__init__()
        from transformers import BlipTextModel, BlipVisionModel

        vision_config = vision_config if vision_config is not None else imagereward_vision_config()
        text_config = text_config if text_config is not None else imagereward_text_config()
        if text_config.encoder_hidden_size != vision_config.hidden_size:
            raise ValueError(
                f"the text encoder's cross-attention width ({text_config.encoder_hidden_size}) must equal the "
                f"vision width ({vision_config.hidden_size})"
            )
        self.vision = BlipVisionModel(vision_config)
        self.text = BlipTextModel(text_config, add_pooling_layer=False)
        width = text_config.hidden_size
        nn = torch.nn
        # No activations between the Linear layers: the official head has them commented out.
        self.mlp = nn.Sequential(
            nn.Linear(width, 1024),
            nn.Dropout(0.2),
            nn.Linear(1024, 128),
            nn.Dropout(0.2),
            nn.Linear(128, 64),
            nn.Dropout(0.1),
            nn.Linear(64, 16),
            nn.Linear(16, 1),
        )

    @property
    def image_size(self) -> int:
        size = self.vision.config.image_size
        return size[0] if isinstance(size, tuple | list) else int(size)

    def text_features(
        self, pixel_values: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> torch.Tensor:
        """The text encoder's [CLS] state with cross-attention to the image tokens, ``(B, hidden)``."""
        image_embeds = self.vision(pixel_values=pixel_values).last_hidden_state
        image_mask = torch.ones(image_embeds.shape[:-1], dtype=torch.long, device=image_embeds.device)
        out = self.text(
            input_ids=input_ids,
            attention_mask=attention_mask,
            encoder_hidden_states=image_embeds,
            encoder_attention_mask=image_mask,
        )
        return out.last_hidden_state[:, 0, :]

    def forward(
        self, pixel_values: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> torch.Tensor:
        """Rewards ``(B,)``: ``(mlp(features) - IMAGEREWARD_MEAN) / IMAGEREWARD_STD``."""
        features = self.text_features(pixel_values, input_ids, attention_mask).float()
        return ((self.mlp(features) - IMAGEREWARD_MEAN) / IMAGEREWARD_STD).squeeze(-1)


def imagereward_official_state_dict(
    model: ImageRewardModel, unused: Mapping[str, torch.Tensor] | None = None
) -> dict[str, torch.Tensor]:
    """``model``'s weights named as the official ``ImageReward.pt`` names them (the inverse of the loading map).

    ``unused`` adds keys scoring ignores (e.g. ``blip.vision_proj.weight``) so a test checkpoint looks like the
    real one.
    """
    out = {_model_to_official_key(k): v.detach().clone() for k, v in model.state_dict().items()}
    out.update(unused or {})
    return out


def load_imagereward_state_dict(
    model: ImageRewardModel, state: Mapping[str, torch.Tensor], source: str = "eval.imagereward.checkpoint"
) -> dict[str, list[str]]:
    """Load an official-format state dict into ``model``, strictly; returns ``{"unused": [...]}``.

    Raises ValueError naming every checkpoint key with no place in the model (``unmapped``), every model tensor
    the checkpoint lacks (``missing``, in the official naming) and every shape mismatch.
    """
    mapped: dict[str, torch.Tensor] = {}
    unmapped, unused = [], []
    for key, value in state.items():
        target = None if IMAGEREWARD_UNUSED_KEYS.match(key) else _official_to_model_key(key)
        if target is not None:
            mapped[target] = value
        elif IMAGEREWARD_UNUSED_KEYS.match(key):
            unused.append(key)
        else:
            unmapped.append(key)
    own = model.state_dict()
    unexpected = sorted(
        k for k in mapped if k not in own
    )  # mapped, but beyond this architecture (e.g. a layer)
    missing = sorted(_model_to_official_key(k) for k in own if k not in mapped)
    wrong = sorted(
        f"{_model_to_official_key(k)} {tuple(v.shape)}≠{tuple(own[k].shape)}"
        for k, v in mapped.items()
        if k in own and v.shape != own[k].shape
    )
    problems = []
    if unmapped:
        problems.append(f"{len(unmapped)} key(s) with no place in the model: {', '.join(sorted(unmapped))}")
    if unexpected:
        names = sorted(_model_to_official_key(k) for k in unexpected)
        problems.append(f"{len(unexpected)} key(s) beyond this architecture: {', '.join(names)}")
    if missing:
        problems.append(f"{len(missing)} key(s) missing: {', '.join(missing)}")
    if wrong:
        problems.append(f"{len(wrong)} tensor(s) of the wrong shape: {', '.join(wrong)}")
    if problems:
        raise ValueError(f"{source} is not an ImageReward checkpoint for this model: " + "; ".join(problems))
    model.load_state_dict(mapped, strict=True)
    return {"unused": sorted(unused)}


def _imagereward_transform(size: int) -> Callable:
    from torchvision.transforms import CenterCrop, Compose, InterpolationMode, Normalize, Resize, ToTensor

    return Compose(
        [
            Resize(size, interpolation=InterpolationMode.BICUBIC),
            CenterCrop(size),
            lambda image: image.convert("RGB"),
            ToTensor(),
            Normalize(CLIP_MEAN, CLIP_STD),
        ]
    )


class ImageRewardEvaluator:
    """ImageReward of each image for its prompt; ``scores`` has ``imagereward_mean`` / ``imagereward_median``.

    Args:
        checkpoint: ``ImageReward.pt`` (huggingface.co/THUDM/ImageReward), a flat state dict.
        tokenizer: a local bert-base-uncased folder (``vocab.txt`` and ``tokenizer_config.json``).
        device: where the model runs; None uses ``inputs.device``.
        batch_size: images per forward pass; None uses ``inputs.batch_size``.
        vision_config / text_config: overrides of :func:`imagereward_vision_config` /
            :func:`imagereward_text_config` (tests use tiny ones; the defaults are ImageReward's).
    """

    name = "imagereward"

    def __init__(
        self,
        checkpoint: str | None,
        tokenizer: str | None,
        device: str | None = None,
        batch_size: int | None = None,
        vision_config: Mapping[str, Any] | None = None,
        text_config: Mapping[str, Any] | None = None,
    ):
        self.checkpoint = checkpoint
        self.tokenizer = tokenizer
        self.device = device
        self.batch_size = batch_size
        self.vision_config = dict(vision_config or {})
        self.text_config = dict(text_config or {})
        self._loaded = None

    def weight_files(self) -> list[WeightFile]:
        return [
            WeightFile(
                key="eval.imagereward.checkpoint",
                path=self.checkpoint,
                what="ImageReward checkpoint ImageReward.pt from huggingface.co/THUDM/ImageReward",
            ),
            WeightFile(
                key="eval.imagereward.tokenizer",
                path=self.tokenizer,
                what="bert-base-uncased tokenizer folder from huggingface.co/google-bert/bert-base-uncased",
                kind="dir",
                contains=("vocab.txt",),
            ),
        ]

    def load(self, device: str = "cpu"):
        """``(model, tokenizer, load_info)``, built once and cached on the evaluator."""
        if self._loaded is None:
            from transformers import BertTokenizer

            for wf in self.weight_files():
                if wf.missing():
                    raise FileNotFoundError(f"{wf.key}={wf.path} is missing {wf.missing()}: {wf.what}")
            model = ImageRewardModel(
                imagereward_vision_config(**self.vision_config), imagereward_text_config(**self.text_config)
            )
            state = _load_checkpoint(
                self.checkpoint, "eval.imagereward.checkpoint", "the ImageReward checkpoint (ImageReward.pt)"
            )
            if not isinstance(state, Mapping):
                raise ValueError(f"eval.imagereward.checkpoint={self.checkpoint} is not a state dict")
            info = load_imagereward_state_dict(model, state, f"eval.imagereward.checkpoint={self.checkpoint}")
            tokenizer = BertTokenizer.from_pretrained(str(Path(self.tokenizer).expanduser()))
            tokenizer.add_special_tokens({"bos_token": BLIP_EXTRA_TOKENS["bos_token"]})
            tokenizer.add_special_tokens(
                {"additional_special_tokens": BLIP_EXTRA_TOKENS["additional_special_tokens"]}
            )
            if len(tokenizer) > model.text.config.vocab_size:
                raise ValueError(
                    f"eval.imagereward.tokenizer={self.tokenizer} has {len(tokenizer)} tokens (with [DEC], [ENC]) "
                    f"but the text encoder only {model.text.config.vocab_size}; it must be bert-base-uncased"
                )
            self._loaded = (model.to(device).eval().requires_grad_(False), tokenizer, info)
        return self._loaded

    def score_images(self, images: list, prompts: list[str], device: str = "cpu") -> torch.Tensor:
        """ImageReward of each (PIL image, prompt) pair, ``(N,)`` float."""
        model, tokenizer, _ = self.load(device)
        transform = _imagereward_transform(model.image_size)
        pixels = torch.stack([transform(im) for im in images]).to(device)
        text = tokenizer(
            list(prompts),
            padding="max_length",
            truncation=True,
            max_length=IMAGEREWARD_MAX_TOKENS,
            return_tensors="pt",
        )
        with torch.no_grad():
            rewards = model(pixels, text["input_ids"].to(device), text["attention_mask"].to(device))
        return rewards.float().cpu()

    def evaluate(self, inputs: EvalInput) -> EvalResult:
        device = self.device or inputs.device
        per_image = _score_records(inputs, self.batch_size, self.score_images, device, "imagereward")
        values = [v["imagereward"] for v in per_image.values()]
        _, _, load_info = self.load(device)
        return EvalResult(
            name=self.name,
            scores=_stats("imagereward", values),
            per_image=per_image,
            info={
                "checkpoint": str(self.checkpoint),
                "tokenizer": str(self.tokenizer),
                "formula": f"(mlp(cls) - {IMAGEREWARD_MEAN}) / {IMAGEREWARD_STD} (ImageReward/ImageReward.py)",
                "max_tokens": IMAGEREWARD_MAX_TOKENS,
                "unused_checkpoint_keys": load_info["unused"],
            },
        )
