"""Benchmarks: pipeline throughput, live latency (with and without the LLM), model latency.

Each measurement runs in a fresh subprocess (so peak RSS is its own), measurements that are
compared are interleaved and repeated within one invocation (this machine is shared and noisy),
and the medians go to JSON and to a markdown section appended to BENCHMARKS.md.

    python tools/bench.py pipeline ../shared/data/videos/liveportrait_d9.mp4
    python tools/bench.py live ../shared/data/videos/liveportrait_d9.mp4 --seconds 60
    python tools/bench.py model
    python tools/bench.py soak ../shared/data/videos/liveportrait_d9.mp4 --minutes 20
    python tools/bench.py ray ../shared/data/videos/liveportrait_d{9,10,12,18}.mp4 --copies 2
    python tools/bench.py web ../shared/data/videos/liveportrait_d9.mp4 --seconds 20
    python tools/bench.py photos ../shared/data/videos --copies 10
    python tools/bench.py photos-llm ../shared/data/videos --copies 5 --llm-delay 2
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"p50": float("nan"), "p95": float("nan")}
    p50, p95 = np.percentile(values, [50, 95])
    return {"p50": round(float(p50), 3), "p95": round(float(p95), 3)}


# -- workers (run in subprocesses) --------------------------------------------------------------
def work_decode_detect(clip: str) -> dict[str, Any]:
    """The floor: read a frame, detect faces, nothing else, one after the other."""
    from edgefer.detect import DetectorOptions, FaceDetector
    from edgefer.sources import open_source

    frames = faces = 0
    with FaceDetector(DetectorOptions()) as detector, open_source(clip) as source:
        start = time.perf_counter()
        for frame in source:
            faces += len(detector.detect(frame))
            frames += 1
        seconds = time.perf_counter() - start
    return {"frames": frames, "faces": faces, "fps": frames / seconds, "peak_rss_mb": peak_rss_mb()}


def work_score(clip: str) -> dict[str, Any]:
    """``edgefer score`` as the CLI runs it (CSV out), with per-stage latencies."""
    from edgefer.apps.score import ScoreOptions, score

    stages: dict[str, list[float]] = {}

    class Observer:
        def file_started(self, name, total):
            self.start = time.perf_counter()

        def frame_done(self, name, result):
            for key, value in result.latency_ms.items():
                stages.setdefault(key, []).append(value)

        def file_done(self, report):
            self.seconds = time.perf_counter() - self.start

    observer = Observer()
    with tempfile.TemporaryDirectory() as folder:
        (report,) = score([clip], ScoreOptions(output=Path(folder) / "faces.csv"), observer)
    return {"frames": report.frames, "faces": report.faces, "fps": report.frames / observer.seconds,
            "stages_ms": {k: percentiles(v) for k, v in stages.items()},
            "peak_rss_mb": peak_rss_mb()}


@contextlib.contextmanager
def stub_endpoint(*args: str) -> Iterator[str]:
    """The OpenAI-protocol test server in a process of its own (as a real endpoint would be: in
    the measured process its request handling would take CPU and the GIL from the loop);
    yields its base URL."""
    import socket

    from tools.ray_cluster import free_port

    port = free_port("127.0.0.1")
    server = subprocess.Popen([sys.executable, str(ROOT / "tools" / "openai_stub.py"),
                               "--port", str(port), *args], stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                break
            if time.monotonic() > deadline or server.poll() is not None:
                raise RuntimeError("the stub server did not start")
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        server.terminate()
        server.wait(10)


def work_live(clip: str, seconds: float, llm_mode: str, paced: bool = True) -> dict[str, Any]:
    """The live loop, headless, on a file paced at its frame rate (30 frames/s), or unpaced (as
    fast as the CPU allows: what the second opinion's own work costs the loop)."""
    from edgefer.apps.live import LiveOptions, LiveSession
    from edgefer.apps.window import DisplayOptions
    from edgefer.capture import CaptureOptions
    from edgefer.llm.config import LlmConfig
    from edgefer.pipeline import RecognizerOptions

    def run(base_url: str | None) -> dict[str, Any]:
        llm = LlmConfig(model="stub", base_url=base_url, threshold=1.0, cooldown_s=1.0,
                        timeout_s=5.0) if base_url else None
        options = LiveOptions(capture=CaptureOptions(clip, realtime=paced, loop=True),
                              recognizer=RecognizerOptions(llm=llm),
                              display=DisplayOptions(headless=True),
                              duration_s=seconds)
        session = LiveSession(options)
        stats = session.run()
        return {"frames": stats.frames, "fps": stats.fps, "dropped": stats.dropped,
                "latency_ms": percentiles(stats.latencies_ms), "peak_rss_mb": peak_rss_mb(),
                "llm_queue_max": stats.llm_queue_max}

    if llm_mode == "none":
        return run(None)
    if llm_mode == "down":
        return run("http://127.0.0.1:9/v1")  # the discard port: connection refused
    server_args = ("--mode", "refuse", "--refuse-above", "0") if llm_mode == "refuse" \
        else ("--delay", "2")
    with stub_endpoint(*server_args) as base_url:
        return run(base_url)


def work_soak(clip: str, minutes: float, sample_s: float = 10.0) -> dict[str, Any]:
    """The live loop on a looped 30 frames/s file with the LLM against a flaky server, sampling
    resident memory, threads, open files and queue sizes while it runs."""
    import os
    import threading

    from edgefer.apps.live import LiveOptions, LiveSession
    from edgefer.apps.window import DisplayOptions
    from edgefer.capture import CaptureOptions
    from edgefer.llm.config import LlmConfig
    from edgefer.pipeline import RecognizerOptions

    def rss_mb() -> float:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    samples: list[dict[str, float]] = []
    with stub_endpoint("--mode", "flaky") as base_url:
        llm = LlmConfig(model="stub", base_url=base_url, threshold=1.0, cooldown_s=2.0,
                        timeout_s=5.0, max_retries=1)
        options = LiveOptions(capture=CaptureOptions(clip, realtime=True, loop=True),
                              recognizer=RecognizerOptions(llm=llm),
                              display=DisplayOptions(headless=True),
                              duration_s=minutes * 60)
        session = LiveSession(options)
        done = threading.Event()

        def sample() -> None:
            start = time.monotonic()
            while not done.wait(sample_s):
                samples.append({"t_s": round(time.monotonic() - start, 1), "rss_mb": rss_mb(),
                                "threads": threading.active_count(),
                                "open_files": len(os.listdir("/proc/self/fd")),
                                "frames": session.stats.frames,
                                "llm_queue_max": session.stats.llm_queue_max})

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        stats = session.run()
        done.set()
    warm = [s for s in samples if s["t_s"] >= 120] or samples
    growth = (warm[-1]["rss_mb"] - warm[0]["rss_mb"]) / warm[0]["rss_mb"] if warm else float("nan")
    return {"minutes": minutes, "frames": stats.frames, "fps": stats.fps, "dropped": stats.dropped,
            "errors": stats.errors, "latency_ms": percentiles(stats.latencies_ms),
            "rss_growth_after_warmup": round(growth, 4), "samples": samples}


def work_web(clip: str, seconds: float, viewers: int, warmup_s: float = 5.0) -> dict[str, Any]:
    """The live loop unpaced (as fast as it goes) with the page and its preview on, watched by
    ``viewers`` page-like clients in another process; frames/s over the watched window."""
    import threading

    from edgefer.apps.live import LiveOptions, LiveSession
    from edgefer.apps.web.server import HttpOptions
    from edgefer.apps.window import DisplayOptions
    from edgefer.capture import CaptureOptions

    options = LiveOptions(capture=CaptureOptions(clip, loop=True), display=DisplayOptions(headless=True),
                          http=HttpOptions(enabled=True, port=0, preview=True),
                          duration_s=warmup_s + seconds + 600)  # stopped below
    session = LiveSession(options)
    runner = threading.Thread(target=session.run)
    runner.start()
    while session.monitor.server is None or session.stats.frames < 1:
        time.sleep(0.1)
    time.sleep(warmup_s)
    client = subprocess.Popen([sys.executable, __file__, "_viewers", str(session.monitor.server.port),
                               str(viewers), str(seconds)], stdout=subprocess.PIPE, text=True)
    client.stdout.readline()  # the viewers' process is up and about to connect
    time.sleep(0.5)
    frames, encoded, cpu = session.stats.frames, session.monitor.preview.encoded, cpu_s()
    start = time.monotonic()
    time.sleep(seconds - 1)
    frames, encoded = session.stats.frames - frames, session.monitor.preview.encoded - encoded
    cpu, elapsed = cpu_s() - cpu, time.monotonic() - start
    received = json.loads(client.communicate()[0].splitlines()[-1])
    session.request_stop()
    runner.join()
    return {"viewers": viewers, "fps": frames / elapsed, "jpegs_per_s": encoded / elapsed,
            "cpu_s_per_s": cpu / elapsed, "cpu_ms_per_frame": 1000 * cpu / max(1, frames),
            "frames_received_per_viewer": received, "peak_rss_mb": peak_rss_mb()}


def cpu_s() -> float:
    """CPU seconds this process has used (all its threads: loop, capture, HTTP, encoder)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def page_viewers(port: int, count: int, seconds: float) -> list[int]:
    """``count`` clients doing what the page does: status every 0.5 s, and the next frame."""
    import threading
    import urllib.request

    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + seconds + 0.5
    received = [0] * count

    def status() -> None:
        while time.monotonic() < deadline:
            urllib.request.urlopen(base + "/api/status", timeout=10).read()
            time.sleep(0.5)

    def frames(slot: int) -> None:
        seq = "0"
        while time.monotonic() < deadline:
            with urllib.request.urlopen(f"{base}/frame.jpg?after={seq}", timeout=10) as reply:
                reply.read()
                if reply.status == 200:
                    seq = reply.headers["X-Frame-Seq"]
                    received[slot] += 1

    threads = [threading.Thread(target=t, args=a) for i in range(count)
               for t, a in ((status, ()), (frames, (i,)))]
    print("ready", flush=True)
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return received


def work_model(batch: int, threads: int) -> dict[str, Any]:
    from edgefer.backends import open_engine
    from edgefer.manifest import load_model_entry

    entry = load_model_entry()
    x = np.random.default_rng(0).normal(size=(batch, 1, entry.input.height,
                                              entry.input.width)).astype(np.float32)
    with open_engine(entry, threads=threads) as engine:
        for _ in range(50):
            engine.run(x)
        latencies = []
        for _ in range(500):
            start = time.perf_counter()
            engine.run(x)
            latencies.append((time.perf_counter() - start) * 1000)
    return {"batch": batch, "threads": threads, "ms_per_batch": percentiles(latencies),
            "ms_per_face_p50": round(float(np.median(latencies)) / batch, 4),
            "model_bytes": entry.file.stat().st_size, "model": entry.name}


def work_score_many(folder: str) -> dict[str, Any]:
    """Plain ``edgefer score`` of every file in ``folder`` into one Parquet table."""
    from edgefer.apps.score import ScoreOptions, score

    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        reports = score([folder], ScoreOptions(output=Path(out) / "faces.parquet"))
        seconds = time.perf_counter() - start
    return {"files": len(reports), "frames": sum(r.frames for r in reports), "seconds": seconds,
            "peak_rss_mb": peak_rss_mb()}


def work_score_photos(folder: str, detector: str, llm_url: str | None = None,
                      photo_window: int | None = None) -> dict[str, Any]:
    """``edgefer score`` of a folder of photos with one ``--detector`` setting; with an LLM
    endpoint, every face asked about (threshold 1) and ``photo_window`` photos at a time."""
    import csv

    from edgefer.apps.score import ScoreOptions, score
    from edgefer.detect import DetectorOptions
    from edgefer.llm.config import LlmConfig
    from edgefer.pipeline import RecognizerOptions

    llm = LlmConfig(model="stub", base_url=llm_url, threshold=1.0) if llm_url else None
    options = RecognizerOptions(detector=DetectorOptions(model=detector), llm=llm)
    with tempfile.TemporaryDirectory() as out:
        table = Path(out) / "faces.csv"
        start = time.perf_counter()
        reports = score([folder], ScoreOptions(output=table, recognizer=options,
                                               photo_window=photo_window))
        seconds = time.perf_counter() - start
        with table.open() as handle:
            answered = sum(row["llm_label"] != "" for row in csv.DictReader(handle))
    return {"detector": detector, "photo_window": photo_window, "photos": len(reports),
            "faces": sum(r.faces for r in reports), "llm_answered": answered,
            "seconds": seconds, "fps": len(reports) / seconds, "peak_rss_mb": peak_rss_mb()}


def work_score_ray(folder: str, address: str) -> dict[str, Any]:
    """``edgefer score --ray ADDRESS`` of the same files into a Parquet dataset, joining a
    running cluster (connection and worker start-up included in the time)."""
    from edgefer.apps.distributed import RayOptions, score_on_ray
    from edgefer.apps.score import ScoreOptions

    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        run = score_on_ray([folder], ScoreOptions(output=Path(out)),
                           RayOptions(output=out, address=address))
        seconds = time.perf_counter() - start
    return {"files": len(run.reports), "frames": sum(r.frames for r in run.reports),
            "seconds": seconds, "workers": run.workers, "peak_rss_mb": peak_rss_mb(),
            "worker_startup_s": run.worker_startup_s,
            "file_overhead_s": percentiles(run.file_overhead_s),
            "failed": sum(r.error is not None for r in run.reports)}


WORKERS = {"decode_detect": work_decode_detect, "score": work_score, "live": work_live,
           "model": work_model, "soak": work_soak, "score_many": work_score_many,
           "score_ray": work_score_ray, "web": work_web, "score_photos": work_score_photos}


def in_subprocess(kind: str, *args: Any, env: dict[str, str] | None = None) -> dict[str, Any]:
    command = [sys.executable, __file__, "_worker", kind, json.dumps(args)]
    result = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
    if result.returncode != 0:
        raise SystemExit(f"{kind} worker failed:\n{result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


# -- suites -------------------------------------------------------------------------------------
def median_run(runs: list[dict[str, Any]], key: str = "fps") -> dict[str, Any]:
    return sorted(runs, key=lambda r: r[key])[len(runs) // 2]


def suite_pipeline(clip: str, repeats: int) -> tuple[dict[str, Any], str]:
    floor_runs, score_runs = [], []
    for _ in range(repeats):  # interleaved, so both see the same machine load
        floor_runs.append(in_subprocess("decode_detect", clip))
        score_runs.append(in_subprocess("score", clip))
    floor, scored = median_run(floor_runs), median_run(score_runs)
    ratios = [s["fps"] / f["fps"] for f, s in zip(floor_runs, score_runs, strict=False)]
    result = {"clip": clip, "repeats": repeats, "decode_detect": floor, "score": scored,
              "score_fps_runs": [round(r["fps"], 1) for r in score_runs],
              "decode_detect_fps_runs": [round(r["fps"], 1) for r in floor_runs],
              "ratio_median": round(float(np.median(ratios)), 3)}
    rows = ["| stage | p50 ms | p95 ms |", "|---|---:|---:|"]
    rows += [f"| {k} | {v['p50']:.2f} | {v['p95']:.2f} |" for k, v in scored["stages_ms"].items()]
    table = "\n".join([
        f"Clip `{Path(clip).name}`, {scored['frames']} frames, median of {repeats} interleaved runs.",
        "", "| measurement | frames/s | peak RSS MB |", "|---|---:|---:|",
        f"| `edgefer score` end to end | {scored['fps']:.1f} | {scored['peak_rss_mb']:.0f} |",
        f"| decode + detect only | {floor['fps']:.1f} | {floor['peak_rss_mb']:.0f} |",
        f"| ratio (per run pair, median) | {result['ratio_median']:.3f} | |", "", *rows])
    return result, table


def suite_live(clip: str, seconds: float, modes: list[str], repeats: int, paced: bool
               ) -> tuple[dict[str, Any], str]:
    """Each LLM endpoint mode ``repeats`` times, interleaved; frames/s relative to the run
    without LLM of the same round (median over rounds)."""
    rounds = [{mode: in_subprocess("live", clip, seconds, mode, paced) for mode in modes}
              for _ in range(repeats)]
    runs = {mode: median_run([r[mode] for r in rounds]) for mode in modes}
    pacing = "paced at its frame rate" if paced else "unpaced (as fast as it runs)"
    lines = [f"Live loop, headless, `{Path(clip).name}` {pacing} and looped, {seconds:.0f} s per "
             f"run, median of {repeats} interleaved rounds.", "",
             "| LLM endpoint | frames/s | vs no LLM | latency p50 ms | latency p95 ms | dropped | "
             "LLM queue max | peak RSS MB |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for mode, run in runs.items():
        ratios = [r[mode]["fps"] / r["none"]["fps"] for r in rounds if "none" in r]
        versus = f"{float(np.median(ratios)):.3f}" if ratios else "-"
        lines.append(f"| {mode} | {run['fps']:.1f} | {versus} | {run['latency_ms']['p50']:.1f} | "
                     f"{run['latency_ms']['p95']:.1f} | {run['dropped']} | {run['llm_queue_max']} | "
                     f"{run['peak_rss_mb']:.0f} |")
    return {"clip": clip, "seconds": seconds, "paced": paced, "rounds": rounds}, "\n".join(lines)


def suite_model() -> tuple[dict[str, Any], str]:
    runs = [in_subprocess("model", b, t) for b, t in ((1, 1), (1, 2), (8, 1), (32, 2))]
    lines = [f"Model `{runs[0]['model']}` ({runs[0]['model_bytes'] / 1e6:.2f} MB), ONNX Runtime CPU.",
             "", "| batch | threads | ms per batch p50 | p95 | ms per face |",
             "|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['batch']} | {r['threads']} | {r['ms_per_batch']['p50']:.3f} | "
              f"{r['ms_per_batch']['p95']:.3f} | {r['ms_per_face_p50']:.3f} |" for r in runs]
    return {"runs": runs}, "\n".join(lines)


def suite_soak(clip: str, minutes: float) -> tuple[dict[str, Any], str]:
    run = in_subprocess("soak", clip, minutes)
    first, last = run["samples"][0], run["samples"][-1]
    lines = [f"Live loop for {minutes:g} min on `{Path(clip).name}` looped at 30 frames/s, LLM on "
             "every track (threshold 1.0) against a flaky test server (random 500, 429, refusals, "
             "malformed replies, 1-3 s delays).", "",
             "| frames | frames/s | dropped | errors | latency p50 / p95 ms | RSS growth after 2 min "
             "warm-up | threads first/last | open files first/last | LLM queue max |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
             f"| {run['frames']} | {run['fps']:.1f} | {run['dropped']} | {run['errors']} | "
             f"{run['latency_ms']['p50']:.1f} / {run['latency_ms']['p95']:.1f} | "
             f"{run['rss_growth_after_warmup']:.1%} | {first['threads']}/{last['threads']} | "
             f"{first['open_files']}/{last['open_files']} | {last['llm_queue_max']} |"]
    return run, "\n".join(lines)


def suite_ray(clips: list[str], copies: int, repeats: int) -> tuple[dict[str, Any], str]:
    """``copies`` copies of each clip, scored by plain ``edgefer score`` and by ``--ray`` on a
    cluster of this machine's CPUs started for the run, interleaved ``repeats`` times."""
    import os
    import shutil
    import signal

    from edgefer.apps.distributed import RayOptions
    from tools.ray_cluster import LocalCluster

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a timeout still stops the cluster
    local_runs, ray_runs = [], []
    with tempfile.TemporaryDirectory() as folder, LocalCluster(cpus=os.cpu_count() or 2) as cluster:
        for k in range(copies):
            for clip in clips:
                shutil.copy(clip, Path(folder) / f"{k}_{Path(clip).name}")
        for _ in range(repeats):
            local_runs.append(in_subprocess("score_many", folder))
            ray_runs.append(in_subprocess("score_ray", folder, cluster.address, env=cluster.env))
    ratios = [loc["seconds"] / ray["seconds"] for loc, ray in zip(local_runs, ray_runs, strict=True)]
    local, ray = median_run(local_runs, "seconds"), median_run(ray_runs, "seconds")
    startup = [s for run in ray_runs for s in run["worker_startup_s"]]
    result = {"clips": clips, "copies": copies, "repeats": repeats, "local": local, "ray": ray,
              "local_seconds_runs": [round(r["seconds"], 2) for r in local_runs],
              "ray_seconds_runs": [round(r["seconds"], 2) for r in ray_runs],
              "ratio_median": round(float(np.median(ratios)), 3),
              "worker_startup_s": percentiles(startup)}
    table = "\n".join([
        f"{local['files']} files ({copies} copies of {len(clips)} clips), {local['frames']} frames; "
        f"Ray: a local cluster of {os.cpu_count()} CPUs on 127.0.0.2, {ray['workers']} worker(s) "
        f"of {RayOptions.cpus_per_worker} CPUs; median of {repeats} interleaved runs.", "",
        "| measurement | seconds | frames/s | peak RSS MB (driver) |", "|---|---:|---:|---:|",
        f"| `edgefer score` (one process) | {local['seconds']:.1f} | "
        f"{local['frames'] / local['seconds']:.1f} | {local['peak_rss_mb']:.0f} |",
        f"| `edgefer score --ray` (joins, starts workers, scores, publishes parts) | "
        f"{ray['seconds']:.1f} | {ray['frames'] / ray['seconds']:.1f} | {ray['peak_rss_mb']:.0f} |",
        f"| throughput ratio, Ray / local (per run pair, median) | {result['ratio_median']:.3f} | | |",
        f"| worker start-up (process, imports, model and detector), p50 / p95 | "
        f"{result['worker_startup_s']['p50']:.2f} / {result['worker_startup_s']['p95']:.2f} | | |",
        f"| per-file overhead on Ray (round trip minus scoring), p50 / p95 | "
        f"{ray['file_overhead_s']['p50']:.3f} / {ray['file_overhead_s']['p95']:.3f} | | |"])
    return result, table
def suite_web(clip: str, seconds: float, repeats: int) -> tuple[dict[str, Any], str]:
    counts = (0, 1, 5)
    runs: dict[int, list[dict[str, Any]]] = {n: [] for n in counts}
    for _ in range(repeats):  # interleaved, so every count sees the same machine load
        for n in counts:
            runs[n].append(in_subprocess("web", clip, seconds, n))
    ratios = {n: float(np.median([r["fps"] / b["fps"] for r, b in zip(runs[n], runs[0], strict=True)]))
              for n in counts}
    # CPU the page takes: the process's CPU per second minus what its frames cost without viewers
    page_cpu = {n: float(np.median([r["cpu_s_per_s"] - b["cpu_ms_per_frame"] / 1000 * r["fps"]
                                    for r, b in zip(runs[n], runs[0], strict=True)])) for n in counts}
    lines = [f"Live loop unpaced on `{Path(clip).name}` (looped), page and preview on (5 JPEG/s at "
             f"most), {seconds:.0f} s watched per run, {repeats} interleaved runs per count; viewers "
             "are page-like clients in another process (status every 0.5 s, every new frame).", "",
             "| viewers | frames/s (median) | runs | vs no viewer (median of per-run ratios) | "
             "page's CPU, share of one core (median) | JPEGs encoded/s | frames received per "
             "viewer/s |", "|---:|---:|---|---:|---:|---:|---:|"]
    for n in counts:
        median = median_run(runs[n])
        got = median["frames_received_per_viewer"]
        per_viewer = f"{np.mean(got) / (seconds + 0.5):.1f}" if got else "-"
        fps_runs = ", ".join(f"{r['fps']:.1f}" for r in runs[n])
        lines.append(f"| {n} | {median['fps']:.1f} | {fps_runs} | {ratios[n]:.3f} | "
                     f"{page_cpu[n]:.1%} | {median['jpegs_per_s']:.1f} | {per_viewer} |")
    return {"clip": clip, "seconds": seconds, "runs": {str(n): r for n, r in runs.items()},
            "ratios": {str(n): round(r, 4) for n, r in ratios.items()},
            "page_cpu_share": {str(n): round(c, 4) for n, c in page_cpu.items()}}, "\n".join(lines)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import os

    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}"


def append_markdown(path: Path, title: str, command: str, table: str) -> None:
    section = (f"\n## {title}\n\n{date.today().isoformat()}, {machine()}.\n\n"
               f"```\n{command}\n```\n\n{table}\n")
    with path.open("a") as handle:
        handle.write(section)


def photos_in(folder: str) -> list[Path]:
    from edgefer.sources import IMAGE_SUFFIXES

    photos = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not photos:
        raise SystemExit(f"no photos in {folder}")
    return photos


def suite_photos(folder: str, copies: int, repeats: int) -> tuple[dict[str, Any], str]:
    """The photos of ``folder`` (each copied ``copies`` times) scored with ``--detector short``
    and ``auto`` (both models on photos), interleaved: what the second model costs."""
    photos = photos_in(folder)
    runs: dict[str, list[dict[str, Any]]] = {"short": [], "auto": []}
    with tempfile.TemporaryDirectory() as copied:
        for photo in photos:
            for i in range(copies):
                shutil.copy(photo, Path(copied) / f"{photo.stem}_{i}{photo.suffix}")
        for _ in range(repeats):
            for detector, done in runs.items():
                done.append(in_subprocess("score_photos", copied, detector))
    best = {detector: median_run(done) for detector, done in runs.items()}
    result = {"folder": folder, "photos": len(photos), "copies": copies, "repeats": repeats,
              **best, "fps_runs": {d: [round(r["fps"], 1) for r in done] for d, done in runs.items()}}
    table = "\n".join([
        f"{len(photos)} photos of `{folder}`, each {copies} times, median of {repeats} "
        "interleaved runs (model loading included).", "",
        "| `--detector` | photos/s | faces found | peak RSS MB |", "|---|---:|---:|---:|",
        *[f"| `{d}` | {r['fps']:.1f} | {r['faces']} | {r['peak_rss_mb']:.0f} |"
          for d, r in best.items()]])
    return result, table


def suite_photos_llm(folder: str, copies: int, repeats: int, delay_s: float
                     ) -> tuple[dict[str, Any], str]:
    """The photos of ``folder`` with every face asked to a stub LLM that answers after
    ``delay_s``: one photo per round trip against the default window, interleaved. Each copy
    is brightened a little, so no answer comes from the cache."""
    import cv2

    photos = photos_in(folder)
    runs: dict[str, list[dict[str, Any]]] = {"1": [], "default": []}
    with tempfile.TemporaryDirectory() as copied, stub_endpoint("--delay", str(delay_s)) as url:
        for photo in photos:
            image = cv2.imread(str(photo))
            for i in range(copies):
                cv2.imwrite(str(Path(copied) / f"{photo.stem}_{i}.png"),
                            cv2.convertScaleAbs(image, beta=i))
        for _ in range(repeats):
            for window, done in runs.items():
                done.append(in_subprocess("score_photos", copied, "auto", url,
                                          None if window == "default" else int(window)))
    best = {window: median_run(done) for window, done in runs.items()}
    result = {"folder": folder, "photos": len(photos), "copies": copies, "repeats": repeats,
              "delay_s": delay_s, **best}
    table = "\n".join([
        f"{len(photos)} photos of `{folder}`, each {copies} times, every face asked to "
        f"`tools/openai_stub.py` answering after {delay_s:g} s (its own process), median of "
        f"{repeats} interleaved runs (model loading included).", "",
        "| photos waiting for answers at once | photos/s | faces | faces answered | seconds |",
        "|---|---:|---:|---:|---:|",
        *[f"| {'1 (one round trip per photo)' if w == '1' else 'default (`photo_window` None)'}"
          f" | {r['fps']:.2f} | {r['faces']} | {r['llm_answered']} | {r['seconds']:.1f} |"
          for w, r in best.items()]])
    return result, table


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_worker":
        print(json.dumps(WORKERS[sys.argv[2]](*json.loads(sys.argv[3]))))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "_viewers":
        print(json.dumps(page_viewers(int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]))))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("suite", choices=("pipeline", "live", "model", "soak", "ray", "web",
                                          "photos", "photos-llm"))
    parser.add_argument("--minutes", type=float, default=20.0, help="soak: how long")
    parser.add_argument("clip", nargs="*")
    parser.add_argument("--copies", type=int, default=4,
                        help="ray: copies of each clip; photos: of each photo")
    parser.add_argument("--repeats", type=int, default=3,
                        help="interleaved runs of each measurement; the table reports their "
                             "median (this machine is shared and noisy)")
    parser.add_argument("--seconds", type=float, default=60.0,
                        help="live and web: how long each run lasts")
    parser.add_argument("--llm-delay", type=float, default=2.0,
                        help="photos-llm: seconds the stub LLM takes per request")
    parser.add_argument("--llm-modes", default="none,slow,refuse,down",
                        help="live: comma-separated LLM endpoints: none, slow (answers in 2 s), "
                             "refuse (refuses every face), down")
    parser.add_argument("--unpaced", action="store_true",
                        help="live: read the clip as fast as the loop runs, not at its frame rate")
    parser.add_argument("--json", type=Path, help="write the raw results")
    parser.add_argument("--markdown", type=Path, default=ROOT / "BENCHMARKS.md",
                        help="append a section here (default BENCHMARKS.md)")
    args = parser.parse_args()
    if args.suite != "model" and not args.clip:
        parser.error(f"{args.suite} needs a clip")
    missing = [clip for clip in args.clip if not Path(clip).exists()]
    if missing:  # said here, rather than as a worker's traceback
        parser.error(f"no such file or folder: {', '.join(missing)}")
    if args.suite != "ray":
        if len(args.clip) > 1:
            parser.error(f"{args.suite} takes one clip")
        args.clip = args.clip[0] if args.clip else None
    if args.suite == "ray":
        result, table = suite_ray(args.clip, args.copies, args.repeats)
        title = "Scale-out: `edgefer score --ray` vs `edgefer score` on one machine"
    elif args.suite == "photos":
        result, table = suite_photos(args.clip, args.copies, args.repeats)
        title = "Photos: the short-range detector alone vs both (`--detector auto`)"
    elif args.suite == "photos-llm":
        result, table = suite_photos_llm(args.clip, args.copies, args.repeats, args.llm_delay)
        title = "Photos with the LLM's second opinion: one at a time vs several waiting at once"
    elif args.suite == "pipeline":
        result, table = suite_pipeline(args.clip, args.repeats)
        title = "Pipeline throughput"
    elif args.suite == "live":
        result, table = suite_live(args.clip, args.seconds, args.llm_modes.split(","),
                                   args.repeats, paced=not args.unpaced)
        title = "Live loop latency and the LLM second opinion"
    elif args.suite == "web":
        result, table = suite_web(args.clip, args.seconds, args.repeats)
        title = "The operator's page: frame-rate cost of viewers"
    elif args.suite == "soak":
        result, table = suite_soak(args.clip, args.minutes)
        title = "Soak: the live loop with a flaky LLM"
    else:
        result, table = suite_model()
        title = "Classifier latency"
    command = "python tools/bench.py " + " ".join(sys.argv[1:])
    print(table)
    if args.json:
        args.json.write_text(json.dumps({"command": command, "machine": machine(),
                                         "date": date.today().isoformat(), **result}, indent=2))
    append_markdown(args.markdown, title, command, table)


if __name__ == "__main__":
    main()
