"""Speed-ups of the micro-benchmarks, printed after pytest-benchmark's own tables."""
from collections import defaultdict

import pytest

GOAL = 30.0  # the scan must beat pydicom's dcmread(stop_before_pixels=True) by this much
_SPEEDUPS: dict = defaultdict(dict)


@pytest.fixture(scope="session")
def speedups():
    """(what, file) -> {"native": median s, "pydicom": median s}, filled by the benchmarks."""
    return _SPEEDUPS


def pytest_terminal_summary(terminalreporter):
    rows = [(what, name, t["pydicom"] / t["native"]) for (what, name), t in _SPEEDUPS.items()
            if "native" in t and "pydicom" in t]
    if not rows:
        return
    tr = terminalreporter
    tr.section(f"native scanner speed-up over pydicom (median times; goal for 'scan': {GOAL:.0f}x)")
    for what, name, ratio in sorted(rows):
        mark = "" if what != "scan" else ("  ok" if ratio >= GOAL else "  BELOW GOAL")
        tr.write_line(f"{what:6s} {name:28s} {ratio:8.1f}x{mark}")
