"""Every benchmark, one after another (`make bench`; about 7 minutes on 2 cores)."""

from __future__ import annotations

import platform
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
SUITE = [
    ["ingest.py", "--seconds", "8", "--rounds", "3"],
    ["e2e.py", "--seconds", "60", "--apprise-seconds", "12"],
    ["slow.py"],
    ["memory.py", "--settle", "20"],
    ["latency.py", "--seconds", "20"],
    ["groups.py", "--seconds", "8", "--rounds", "3"],
    ["ui.py", "--seconds", "8", "--rounds", "3"],
    ["postgres.py", "--seconds", "8", "--rounds", "3"],
    ["stored.py"],
]


def main() -> None:
    print(
        f"relayhook benchmarks, {time.strftime('%Y-%m-%d %H:%M %Z')}, {platform.node()}, "
        f"{platform.machine()}, Python {platform.python_version()}"
    )
    with open("/proc/cpuinfo") as f:
        model = next(
            (line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "?"
        )
    print(f"cpu: {model}")
    failed = 0
    for script, *args in SUITE:
        started = time.monotonic()
        code = subprocess.call([sys.executable, str(BENCH / script), *args], cwd=BENCH)
        print(f"  ({script} took {time.monotonic() - started:.0f} s{', FAILED' if code else ''})")
        failed += code != 0
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
