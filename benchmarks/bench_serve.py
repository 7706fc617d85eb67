"""Load test of ``autoseg serve`` on loopback: throughput, latency percentiles and the server's
peak RAM with 1, 4 and 16 concurrent clients, and proof that nothing is lost or mixed up.

Usage:
  python benchmarks/bench_serve.py --work WORK -c CONFIG --dataset DATASET [--cases 20]
                                   [--requests 32] [--clients 1 4 16] [--name serve]

The configuration is exported (``autoseg export``) and served from the bundle by a fresh
``autoseg serve`` process (default mirroring decision and backend, as ``predict`` would use).
The reference is one ``autoseg predict -m model.zip`` run on the same cases. Then, per client
count, ``--requests`` requests (at least one per client; bounded, so the test stops by itself)
are sent by that many threads, each taking the next case in turn; every response is decoded
and compared voxel for voxel with the CLI's file for its case. Peak RAM is the server process's
high-water mark (VmHWM, reset before each level through /proc/PID/clear_refs). Results:
benchmarks/results/NAME.json. Not a test.
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from measure import autoseg_command as autoseg  # noqa: E402
from measure import run_measured, save_results  # noqa: E402

from autoseg.io.images import read_label  # noqa: E402
from autoseg.workdir import WorkDir  # noqa: E402


def high_water_mark_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as handle:
        return next(int(line.split()[1]) * 1024 for line in handle if line.startswith("VmHWM:"))


def reset_high_water_mark(pid: int) -> None:
    with open(f"/proc/{pid}/clear_refs", "w") as handle:
        handle.write("5")


def decoded(content: bytes, scratch: Path) -> np.ndarray:
    with tempfile.NamedTemporaryFile(suffix=".nii.gz", dir=scratch) as handle:
        handle.write(content)
        handle.flush()
        return read_label(handle.name)[0]


def load_level(host: str, port: int, clients: int, requests: int, cases: list[Path], references: dict[str, np.ndarray],
               scratch: Path) -> dict:
    """Send ``requests`` uploads from ``clients`` threads; latencies, failures and mismatches."""
    order = itertools.count()
    lock = threading.Lock()
    latencies: list[float] = []
    problems: list[str] = []

    def client() -> None:
        while True:
            with lock:
                number = next(order)
            if number >= requests:
                return
            scan = cases[number % len(cases)]
            began = time.perf_counter()
            connection = http.client.HTTPConnection(host, port, timeout=1800)
            try:
                connection.request("POST", "/segment", body=scan.read_bytes(), headers={"X-Filename": scan.name})
                response = connection.getresponse()
                body = response.read()
            finally:
                connection.close()
            elapsed = time.perf_counter() - began
            case = scan.name.replace("_0000.nii.gz", "")
            with lock:
                latencies.append(elapsed)
            if response.status != 200:
                with lock:
                    problems.append(f"{case}: HTTP {response.status} {body[:200]!r}")
            elif not np.array_equal(decoded(body, scratch), references[case]):
                with lock:
                    problems.append(f"{case}: response differs from the CLI's segmentation")

    began = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - began
    ordered = np.sort(latencies)
    return {"clients": clients, "requests": requests, "completed": len(latencies), "wall_seconds": wall,
            "throughput_per_minute": 60 * len(latencies) / wall,
            "latency_seconds": {f"p{q}": float(np.percentile(ordered, q)) for q in (50, 90, 99)} | {
                "max": float(ordered[-1])},
            "problems": problems}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", required=True)
    parser.add_argument("-c", "--configuration", required=True)
    parser.add_argument("--dataset", required=True, help="raw dataset whose imagesTr holds the cases")
    parser.add_argument("--cases", type=int, default=20)
    parser.add_argument("--requests", type=int, default=32, help="requests per client count (at least the clients)")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--name", default="serve")
    args = parser.parse_args()
    work, dataset = WorkDir(args.work), Path(args.dataset)
    scratch = Path(tempfile.mkdtemp(prefix="autoseg_bench_serve_"))
    results: dict = {"work": str(work.root), "configuration": args.configuration, "levels": []}
    server = None
    try:
        inputs = scratch / "input"
        inputs.mkdir()
        for image in sorted((dataset / "imagesTr").glob("*_0000.nii.gz"))[: args.cases]:
            shutil.copy(image, inputs)
        cases = sorted(inputs.iterdir())
        bundle = scratch / "model.zip"
        assert run_measured(autoseg("export", str(work.root), "-c", args.configuration, "-o", str(bundle)))[
            "exit_code"] == 0
        reference = run_measured(autoseg("predict", "-m", str(bundle), "-i", str(inputs), "-o", str(scratch / "cli")),
                                 env={"TQDM_DISABLE": "1"})
        assert reference["exit_code"] == 0, reference["output_tail"]
        results["cli"] = {"wall_seconds": reference["wall_seconds"], "peak_rss_bytes": reference["peak_rss_bytes"],
                          "output_tail": reference["output_tail"]}
        references = {path.name[: -len(".nii.gz")]: read_label(path)[0] for path in (scratch / "cli").glob("*.nii.gz")}
        began = time.perf_counter()
        server = subprocess.Popen(autoseg("serve", "-m", str(bundle), "--port", "0", "--quiet"),
                                  stdout=subprocess.PIPE, text=True)
        lines = [server.stdout.readline() for _ in range(2)]
        results["server_start_seconds"] = time.perf_counter() - began
        results["server_says"] = lines
        host, port = lines[1].split("http://")[1].split()[0].split(":")
        results["server_rss_after_start_bytes"] = high_water_mark_bytes(server.pid)
        for clients in args.clients:
            reset_high_water_mark(server.pid)
            level = load_level(host, int(port), clients, max(args.requests, clients), cases, references, scratch)
            level["server_peak_rss_bytes"] = high_water_mark_bytes(server.pid)
            results["levels"].append(level)
            save_results(args.name, results)
            latency = level["latency_seconds"]
            print(f"{clients} client(s): {level['completed']}/{level['requests']} in {level['wall_seconds']:.1f} s, "
                  f"{level['throughput_per_minute']:.1f}/min, latency p50 {latency['p50']:.2f} p90 "
                  f"{latency['p90']:.2f} p99 {latency['p99']:.2f} s, server peak "
                  f"{level['server_peak_rss_bytes'] / 2**30:.2f} GiB, {len(level['problems'])} problem(s)", flush=True)
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=120)
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
