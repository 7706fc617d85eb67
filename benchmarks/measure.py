"""Run a command and measure its wall time and peak memory (whole process tree), Linux only.

Peak memory is the largest sum of resident set sizes of the process and all its
descendants, sampled every 50 ms from /proc.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
RESULTS = Path(__file__).resolve().parent / "results"


def _children(pid: int) -> list[int]:
    found = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as handle:
                found.extend(int(child) for child in handle.read().split())
    except OSError:
        pass
    return found


def _rss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def tree_rss_bytes(pid: int) -> int:
    total, stack = 0, [pid]
    while stack:
        current = stack.pop()
        total += _rss_bytes(current)
        stack.extend(_children(current))
    return total


def run_measured(command: list[str], env: dict | None = None) -> dict:
    """Run ``command``; return wall seconds, peak tree RSS (bytes), exit code and output tail."""
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env={**os.environ, **(env or {})})
    peak = 0
    output: list[str] = []
    import threading

    reader = threading.Thread(target=lambda: output.extend(process.stdout), daemon=True)
    reader.start()
    while process.poll() is None:
        peak = max(peak, tree_rss_bytes(process.pid))
        time.sleep(0.05)
    reader.join()
    return {"command": " ".join(command), "wall_seconds": time.perf_counter() - start,
            "peak_rss_bytes": peak, "exit_code": process.returncode, "output_tail": "".join(output[-15:])}


def autoseg_command(*arguments: str) -> list[str]:
    """``python -m autoseg.cli ARGUMENTS`` with this interpreter."""
    return [sys.executable, "-m", "autoseg.cli", *arguments]


def run_step(label: str, command: list[str], results: dict, name: str) -> dict:
    """Run one whole command (progress bars off), append its wall time, peak RAM, exit code and the
    1-minute load average before it started to ``results["steps"]``, save ``results`` as ``name``;
    exit with its output when it fails."""
    load = os.getloadavg()[0]
    measured = run_measured(command, env={"TQDM_DISABLE": "1"})
    results.setdefault("steps", []).append({
        "label": label, "command": measured["command"], "wall_seconds": measured["wall_seconds"],
        "peak_rss_bytes": measured["peak_rss_bytes"], "exit_code": measured["exit_code"],
        "load_average_before": load})
    save_results(name, results)
    print(f"{label}: {measured['wall_seconds'] / 60:.1f} min, exit {measured['exit_code']}", flush=True)
    if measured["exit_code"] != 0:
        print(measured["output_tail"])
        raise SystemExit(f"{label} failed")
    return measured


def machine_info() -> dict:
    import torch

    model = "unknown"
    try:
        with open("/proc/cpuinfo") as handle:
            model = next(line.split(":", 1)[1].strip() for line in handle if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return {"cpu_model": model, "cores": os.cpu_count(), "ram_gib": round(ram / 2**30, 1),
            "python": platform.python_version(), "torch": torch.__version__,
            "cuda": torch.cuda.is_available()}


def require_shared(name: str) -> Path:
    path = SHARED_DATA / name
    if not (path / "dataset.json").is_file():
        print(f"skipped: {path} not available")
        sys.exit(0)
    return path


def save_results(name: str, results: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"machine": machine_info(), **results}, indent=2) + "\n")
    print(f"saved {path}")
    return path
