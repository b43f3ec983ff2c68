"""StageTimer / measure on CPU (fake clocks where the numbers must be exact); CUDA paths skip without a GPU."""

import ast
import time
from pathlib import Path

import pytest
import torch

from moss_eval import Measurement, StageTimer, measure

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


class FakeClock:
    """Each call returns the current time; tests advance it explicitly."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_stage_accumulates_per_name_and_resets():
    clock = FakeClock()
    timer = StageTimer("cpu", time_fn=clock)
    with timer.stage("draft"):
        clock.now += 2.0
    with timer.stage("decode"):
        clock.now += 0.5
    with timer.stage("draft"):  # same name again: accumulates
        clock.now += 1.0
    assert timer.seconds == {"draft": 3.0, "decode": 0.5}
    timer.reset()
    assert timer.seconds == {}


def test_nested_stages_and_exceptions_are_timed():
    clock = FakeClock()
    timer = StageTimer("cpu", time_fn=clock)
    with timer.stage("backbone"):
        clock.now += 1.0
        with timer.stage("moss"):
            clock.now += 0.25

    def failing_stage():
        with timer.stage("decode"):
            clock.now += 4.0
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        failing_stage()
    assert timer.seconds == {"backbone": 1.25, "moss": 0.25, "decode": 4.0}


def test_seconds_is_a_copy_and_real_clock_is_monotonic():
    timer = StageTimer("cpu")
    with timer.stage("sleep"):
        time.sleep(0.02)
    first = timer.seconds
    first["sleep"] = -1.0  # must not leak back into the timer
    assert timer.seconds["sleep"] >= 0.02
    with timer.stage("sleep"):
        pass
    assert timer.seconds["sleep"] >= 0.02


def test_bad_stage_name():
    with pytest.raises(ValueError, match="name"), StageTimer().stage(""):
        pass


def test_duck_types_moss_models_stage_clock():
    # InfinityGenerator.generate(..., clock=...) only uses .stage(name) and reads dict(clock.seconds).
    from moss_models.core.timing import StageClock

    for clock in (StageClock("cpu"), StageTimer("cpu")):
        with clock.stage("text"):
            pass
        with clock.stage("draft"):
            pass
        seconds = dict(clock.seconds)
        assert set(seconds) == {"text", "draft"}
        assert all(isinstance(v, float) and v >= 0 for v in seconds.values())


def test_moss_eval_does_not_import_moss_models():
    src = Path(__import__("moss_eval").__file__).parent
    imported = set()
    for file in src.glob("*.py"):
        for node in ast.walk(ast.parse(file.read_text())):
            if isinstance(node, ast.Import):
                imported |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                imported.add(node.module.split(".")[0])
    assert not imported & {"moss_models", "moss_dispatch", "moss_attention"}


def test_measure_excludes_warmup():
    clock = FakeClock()
    calls = []

    def fn():
        calls.append(len(calls))
        clock.now += 10.0 if len(calls) == 1 else 1.0 + 0.1 * len(calls)  # a slow first call (compile, cache)
        return len(calls)

    m = measure(fn, warmup=1, repeats=4, time_fn=clock)
    assert isinstance(m, Measurement)
    assert m.warmup_seconds == (10.0,)
    assert m.seconds == pytest.approx((1.2, 1.3, 1.4, 1.5))
    assert m.median == pytest.approx(1.35)
    assert (m.min, m.max) == pytest.approx((1.2, 1.5))
    assert m.stdev == pytest.approx(torch.tensor([1.2, 1.3, 1.4, 1.5], dtype=torch.float64).std().item())
    assert m.output == 5 and len(calls) == 5


def test_measure_with_timer_gives_per_repeat_stages():
    clock = FakeClock()

    def fn(timer):
        with timer.stage("draft"):
            clock.now += 3.0
        with timer.stage("moss"):
            clock.now += 1.0

    m = measure(fn, warmup=2, repeats=3, with_timer=True, time_fn=clock)
    assert len(m.stage_seconds) == 3  # warm-up stages are not kept
    assert m.stage_median == {"draft": 3.0, "moss": 1.0}
    assert m.seconds == (4.0, 4.0, 4.0)


def test_measure_real_sleep_first_call():
    state = {"n": 0}

    def fn():
        state["n"] += 1
        if state["n"] == 1:
            time.sleep(0.15)

    m = measure(fn, warmup=1, repeats=3)
    assert m.warmup_seconds[0] >= 0.15
    assert m.max < 0.15


@pytest.mark.parametrize(("kwargs", "name"), [({"repeats": 0}, "repeats"), ({"warmup": -1}, "warmup")])
def test_measure_bad_counts(kwargs, name):
    with pytest.raises(ValueError, match=name):
        measure(lambda: None, **kwargs)


@pytest.mark.gpu
@needs_cuda
def test_cuda_events_time_kernels():
    timer = StageTimer("cuda")
    x = torch.randn(2048, 2048, device="cuda")
    with timer.stage("matmul"):
        for _ in range(5):
            x = x @ x / 2048
    assert timer._pending  # events recorded, nothing synchronised yet
    seconds = timer.seconds
    assert seconds["matmul"] > 0 and not timer._pending
    m = measure(lambda: x @ x, warmup=1, repeats=3, device="cuda")
    assert len(m.seconds) == 3 and m.median > 0
