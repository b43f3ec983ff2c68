"""Per-stage latency that is honest on GPUs, and repeated measurement with warm-up runs left out.

On CUDA a stage is a pair of ``torch.cuda.Event``s recorded on the current stream: the host is never blocked
between stages, and the device is synchronised once, when :attr:`StageTimer.seconds` is read. (A host-side
``perf_counter`` would time kernel *launches*, not kernels, unless every stage boundary synchronised — which is
what ``moss_models.core.timing.StageClock`` does; the event pairs avoid those extra syncs.) On CPU a stage is
two ``time.perf_counter()`` readings.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch


class StageTimer:
    """Accumulates seconds per named stage: ``with timer.stage("draft"): ...``.

    Duck-type compatible with ``moss_models.core.timing.StageClock`` (a ``.stage(name)`` context manager and a
    ``.seconds`` dict), so it can be passed as ``NextScaleGenerator.generate(..., clock=timer)``.

    * A stage entered several times accumulates; nested stages are timed independently (an outer stage includes
      its inner ones).
    * CUDA devices use event pairs on the current stream; reading :attr:`seconds` synchronises those events once.
      Other devices use ``time_fn`` (``time.perf_counter`` unless a test injects a fake clock).
    """

    def __init__(
        self, device: torch.device | str = "cpu", *, time_fn: Callable[[], float] = time.perf_counter
    ):
        self.device = torch.device(device)
        self._time_fn = time_fn
        self._seconds: dict[str, float] = {}
        # CUDA: (name, start, end) event pairs recorded but not yet read; resolved into _seconds on read.
        self._pending: list[tuple[str, torch.cuda.Event, torch.cuda.Event]] = []

    @property
    def uses_cuda_events(self) -> bool:
        return self.device.type == "cuda"

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        if not isinstance(name, str) or not name:
            raise ValueError(f"name must be a non-empty str, got {name!r}")
        if self.uses_cuda_events:
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            # Record on the device's current stream explicitly rather than switching the current device, which
            # would leak into the timed code.
            start.record(torch.cuda.current_stream(self.device))
            try:
                yield
            finally:
                end.record(torch.cuda.current_stream(self.device))
                self._pending.append((name, start, end))
        else:
            begin = self._time_fn()
            try:
                yield
            finally:
                self._add(name, self._time_fn() - begin)

    def _add(self, name: str, seconds: float) -> None:
        self._seconds[name] = self._seconds.get(name, 0.0) + seconds

    def _resolve(self) -> None:
        if not self._pending:
            return
        # Wait on the latest end event first: that is the one blocking wait, since every earlier event on the
        # same stream is then complete and its synchronize() returns at once (still called in case a stage ran
        # on another stream).
        for _, _, end in reversed(self._pending):
            end.synchronize()
        for name, start, end in self._pending:
            self._add(name, start.elapsed_time(end) / 1000.0)
        self._pending.clear()

    @property
    def seconds(self) -> dict[str, float]:
        """Seconds per stage so far (a copy). On CUDA this waits for the recorded stages to finish."""
        self._resolve()
        return dict(self._seconds)

    def reset(self) -> None:
        """Forget every stage (pending CUDA events included)."""
        self._seconds.clear()
        self._pending.clear()


@dataclass(frozen=True)
class Measurement:
    """Timings of repeated calls; warm-up calls are kept apart and excluded from every statistic."""

    seconds: tuple[float, ...]  # wall time of each measured repeat
    warmup_seconds: tuple[float, ...]  # wall time of each warm-up call (not in any statistic)
    stage_seconds: tuple[dict[str, float], ...] = ()  # per repeat, when measure(..., with_timer=True)
    output: Any = field(default=None, repr=False)  # what the last measured call returned

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.seconds)

    @property
    def min(self) -> float:
        return min(self.seconds)

    @property
    def max(self) -> float:
        return max(self.seconds)

    @property
    def stdev(self) -> float:
        """Sample standard deviation; 0.0 for a single repeat."""
        return statistics.stdev(self.seconds) if len(self.seconds) > 1 else 0.0

    @property
    def stage_median(self) -> dict[str, float]:
        """Median over repeats of each stage's seconds (stages missing from a repeat count as absent)."""
        names = sorted({name for stages in self.stage_seconds for name in stages})
        return {name: statistics.median(s[name] for s in self.stage_seconds if name in s) for name in names}


def measure(
    fn: Callable[..., Any],
    *,
    warmup: int = 1,
    repeats: int = 5,
    device: torch.device | str = "cpu",
    with_timer: bool = False,
    time_fn: Callable[[], float] = time.perf_counter,
) -> Measurement:
    """Call ``fn`` ``warmup`` times (discarded: compilation, autotuning, allocator growth), then ``repeats`` times.

    Each call is timed as one :class:`StageTimer` stage on ``device`` (CUDA events on CUDA). With
    ``with_timer=True``, ``fn`` receives a fresh :class:`StageTimer` per call — pass it on, e.g. as
    ``generate(..., clock=timer)`` — and :attr:`Measurement.stage_seconds` holds the measured repeats' stages.
    """
    for name, value, low in (("warmup", warmup, 0), ("repeats", repeats, 1)):
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise ValueError(f"{name} must be an int >= {low}, got {value!r}")

    def one_call() -> tuple[float, dict[str, float], Any]:
        outer = StageTimer(device, time_fn=time_fn)
        inner = StageTimer(device, time_fn=time_fn)
        with outer.stage("call"):
            out = fn(inner) if with_timer else fn()
        return outer.seconds["call"], inner.seconds, out

    warm = tuple(one_call()[0] for _ in range(warmup))
    seconds, stages, out = [], [], None
    for _ in range(repeats):
        sec, stage, out = one_call()
        seconds.append(sec)
        stages.append(stage)
    return Measurement(
        seconds=tuple(seconds),
        warmup_seconds=warm,
        stage_seconds=tuple(stages) if with_timer else (),
        output=out,
    )
