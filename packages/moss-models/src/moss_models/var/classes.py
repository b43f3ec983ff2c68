"""ImageNet-1k class labels for class-conditional models: a label is a class id, an id written as text, or a class
name (exact, else case-insensitive; a name that still fits two classes is refused with both ids: "Cardigan" is the
corgi, 264, and "cardigan" the sweater, 474)."""

from __future__ import annotations

import functools
import json
from importlib import resources

NUM_CLASSES = 1000


@functools.cache
def imagenet_classes() -> tuple[str, ...]:
    """The 1000 class names in id order (torchvision's list; see ``imagenet_classes.json``)."""
    data = json.loads(resources.files("moss_models.var").joinpath("imagenet_classes.json").read_text("utf-8"))
    return tuple(data["classes"])


@functools.cache
def _ids_by_name() -> dict[str, tuple[int, ...]]:
    ids: dict[str, list[int]] = {}
    for i, name in enumerate(imagenet_classes()):
        ids.setdefault(name.lower(), []).append(i)
    return {name: tuple(v) for name, v in ids.items()}


def class_label(value: object) -> int:
    """The class id of ``value``: an int in [0, 1000), its decimal text, or a class name."""
    if isinstance(value, bool):
        raise ValueError(
            f"a class label must be an id in [0, {NUM_CLASSES}) or an ImageNet class name, got {value!r}"
        )
    if isinstance(value, int):
        label = value
    elif isinstance(value, str) and value.strip().isdigit():
        label = int(value.strip())
    elif isinstance(value, str) and value.strip() in imagenet_classes():
        return imagenet_classes().index(value.strip())
    elif isinstance(value, str):
        ids = _ids_by_name().get(value.strip().lower())
        if ids is None:
            raise ValueError(
                f"{value!r} is not an ImageNet class name; give a class id in [0, {NUM_CLASSES}) or a name such as "
                f"{imagenet_classes()[207]!r} (207); the list is moss_models.var.imagenet_classes()"
            )
        if len(ids) > 1:
            raise ValueError(
                f"the class name {value!r} names {len(ids)} classes {list(ids)}; give the id instead"
            )
        return ids[0]
    else:
        raise ValueError(
            f"a class label must be an id in [0, {NUM_CLASSES}) or an ImageNet class name, got {value!r}"
        )
    if not 0 <= label < NUM_CLASSES:
        raise ValueError(f"class id {label} is outside [0, {NUM_CLASSES})")
    return label
