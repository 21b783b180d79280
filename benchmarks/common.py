"""Shared helpers of the benchmarks: timing (median of repeats) and peak memory (sampled RSS, or CUDA's counter).

Imported first by every benchmark: it opts in to pointgeo's CPU memory settings before torch starts, as the
``pointgeo`` command does (transparent huge pages, :func:`pointgeo.enable_cpu_huge_pages`); ``device_name`` reports
them.
"""

from __future__ import annotations

from pointgeo import enable_cpu_huge_pages

HUGE_PAGES = enable_cpu_huge_pages()  # before torch is imported, below

import statistics  # noqa: E402
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import psutil
import torch


@dataclass
class Measurement:
    """Median wall time in seconds and peak extra memory in MiB of a callable."""

    seconds: float
    peak_mib: float


class PeakRSS:
    """Peak resident memory above the level at entry, sampled every millisecond in a thread (CPU runs)."""

    def __enter__(self) -> PeakRSS:
        self.process = psutil.Process()
        self.base = self.process.memory_info().rss
        self.peak = self.base
        self.running = True
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def _sample(self) -> None:
        while self.running:
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(0.001)

    def __exit__(self, *exc: object) -> None:
        self.running = False
        self.thread.join()
        self.peak = max(self.peak, self.process.memory_info().rss)

    @property
    def mib(self) -> float:
        return (self.peak - self.base) / 2**20


def measure(fn: Callable[[], object], repeats: int = 3, device: str = "cpu") -> Measurement:
    """Run ``fn`` once to warm up, then ``repeats`` times: median time of the timed runs, and peak memory above
    the level before the first run (the warm-up's allocations count: the allocator keeps them for later runs)."""
    times = []
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    with PeakRSS() as rss:
        fn()
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            if cuda:
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
    peak = (torch.cuda.max_memory_allocated() - base) / 2**20 if cuda else rss.mib
    return Measurement(statistics.median(times), peak)


def device_name(device: str) -> str:
    """A readable name of the device the benchmark runs on."""
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(device)
    huge_pages = "on" if HUGE_PAGES else "off"
    return f"CPU, {torch.get_num_threads()} torch threads, transparent huge pages {huge_pages}"


def print_measurement(name: str, m: Measurement, batch: int, points: int, params: int) -> None:
    """One line: time per step, samples/s, peak memory and parameter count."""
    print(f"{name}: B={batch} N={points}  {m.seconds:6.2f} s/step  {batch / m.seconds:6.2f} samples/s  "
          f"{m.peak_mib:8.0f} MiB peak  {params / 1e6:.2f} M params")


def print_ratios(m: Measurement, batch: int, reference: dict[str, float], label: str) -> None:
    """The ratios against a reference run's figures (``samples_per_s``, ``peak_mib``, ``batch``, ``points``):
    throughput ours / reference, memory reference / ours."""
    rate = batch / m.seconds
    print(f"  vs {label} (B={reference['batch']:.0f}, N={reference['points']:.0f}: "
          f"{reference['samples_per_s']} samples/s, {reference['peak_mib']:.0f} MiB): "
          f"throughput {rate / reference['samples_per_s']:.2f}x, "
          f"memory {reference['peak_mib'] / max(m.peak_mib, 1):.2f}x less")


def print_against_reference(name: str, m: Measurement, batch: int, points: int, params: int,
                            reference: dict[str, float]) -> None:
    """:func:`print_measurement` and :func:`print_ratios` against the released code's published figures."""
    print_measurement(name, m, batch, points, params)
    print_ratios(m, batch, reference, "released code")
