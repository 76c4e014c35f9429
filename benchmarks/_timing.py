"""Timing that cannot mislead, shared by the benchmarks: compared variants run interleaved, in an order that
rotates every repeat (no variant always runs first, or right after another's warm caches), each call
timed in wall time and in CPU time of the whole process (all threads; it varies less with the load of a
shared machine), summarised by the median with the interquartile range, and ratios taken per repeat
(paired) before their median, so a load change during one repeat hits both sides of the ratio.
"""

import statistics
import time
from dataclasses import dataclass, field


@dataclass
class Samples:
    """Per-repeat seconds of one variant."""

    wall: list = field(default_factory=list)
    cpu: list = field(default_factory=list)


def resident_mib(field: str = "VmRSS") -> float:
    """This process's resident memory in MiB from Linux ``/proc/self/status``: ``VmRSS`` now, ``VmHWM`` its
    peak (since the last :func:`reset_peak_resident`). ``OSError`` where there is no such file or field."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise OSError(f"{field} not in /proc/self/status")


def reset_peak_resident() -> None:
    """Reset the kernel's peak resident set of this process (``VmHWM``) to the current one (Linux)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def quartiles(values) -> tuple[float, float, float]:
    """``(q1, median, q3)``; for fewer than 4 values the min and max stand in for the quartiles."""
    values = sorted(values)
    if len(values) < 4:
        return values[0], statistics.median(values), values[-1]
    q1, q2, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, q2, q3


def spread(values, scale: float = 1.0, digits: int = 2) -> str:
    """``"median [q1-q3]"`` of ``values * scale``."""
    q1, q2, q3 = (v * scale for v in quartiles(values))
    return f"{q2:.{digits}f} [{q1:.{digits}f}-{q3:.{digits}f}]"


def interleaved(fns: dict, repeats: int, warmup: int = 1, sync=lambda: None) -> dict:
    """Time every callable of ``fns`` ``repeats`` times, interleaved: repeat ``r`` runs the variants in the
    order rotated by ``r``. ``warmup`` untimed calls of each first; ``sync()`` (e.g. CUDA synchronise) ends
    each timed call. Returns ``{name: Samples}``."""
    names = list(fns)
    for _ in range(warmup):
        for name in names:
            fns[name]()
        sync()
    samples = {name: Samples() for name in names}
    for r in range(repeats):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            t0, c0 = time.perf_counter(), time.process_time()
            fns[name]()
            sync()
            samples[name].wall.append(time.perf_counter() - t0)
            samples[name].cpu.append(time.process_time() - c0)
    return samples


def paired_ratios(a: list, b: list) -> list:
    """Per-repeat ratios ``a[r] / b[r]``."""
    return [x / y for x, y in zip(a, b)]


MARKDOWN_HEADER = "| benchmark | measurement | value | spread / note |\n|---|---|---|---|\n"


def append_rows(path, rows: list) -> None:
    """Append ``(benchmark, measurement, value, note)`` rows to the one markdown table at ``path`` (its
    header is written first when the file is new or empty)."""
    with open(path, "a") as f:
        if f.tell() == 0:
            f.write(MARKDOWN_HEADER)
        f.writelines(f"| {' | '.join(str(c) for c in row)} |\n" for row in rows)
