"""What every family's conditioning context shares: its rows are the images, then, with guidance, each image's
unconditional row in the same order (the convention :class:`~moss_models.core.family.ScaleFamily` states)."""

from __future__ import annotations


class GuidanceRows:
    """Mixin for a context dataclass with ``cond`` ``(rows, …)`` and ``has_uncond``."""

    @property
    def batch_size(self) -> int:
        return self.cond.shape[0]

    @property
    def images(self) -> int:
        return self.batch_size // (2 if self.has_uncond else 1)

    def row_slice(self, which: str) -> slice | None:
        """The rows of every image's conditional (``cond``) or unconditional (``uncond``) row; None when the
        context holds only conditional rows (it is then its own ``cond`` part)."""
        if which not in ("cond", "uncond"):
            raise ValueError(f"rows must be 'cond' or 'uncond', got {which!r}")
        if not self.has_uncond:
            if which == "uncond":
                raise ValueError("this context has no unconditional rows")
            return None
        b = self.images
        return slice(0, b) if which == "cond" else slice(b, 2 * b)
