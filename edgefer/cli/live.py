"""``edgefer live`` and ``edgefer kiosk``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from edgefer.apps.live import LiveOptions, LiveSession, LiveStats, install_signal_handlers
from edgefer.apps.outputs import OutputOptions
from edgefer.apps.web.server import HttpOptions
from edgefer.apps.window import DisplayOptions
from edgefer.capture import CaptureOptions
from edgefer.cli.common import (
    add_llm_arguments,
    add_recognizer_arguments,
    make_console,
    recognizer_options,
    refuse_without,
    seconds,
)
from edgefer.sources import is_camera, is_stream


def add_commands(commands: Any) -> None:
    live = commands.add_parser(
        "live", help="live recognition from a camera (or a file or URL) in a window",
        description="Keys: q/Esc quit, space pause, f fullscreen, s snapshot, d debug overlay.")
    source = live.add_mutually_exclusive_group()
    source.add_argument("--camera", type=int, help="camera index (default 0)")
    source.add_argument("--source", help="a video file, stream URL, image or folder of "
                        "frames (one stream) instead of a camera")
    live.add_argument("--realtime", action="store_true",
                      help="pace a file source at its native frame rate")
    live.add_argument("--loop", action="store_true", help="restart a file source at its end")
    live.add_argument("--headless", action="store_true", help="no window")
    live.add_argument("--fullscreen", action="store_true", help="start in fullscreen (key f toggles)")
    live.add_argument("--record", type=Path, metavar="OUT.mp4", help="record the annotated view")
    live.add_argument("-o", "--output", type=Path, help="per-face rows (.csv/.jsonl/.parquet)")
    live.add_argument("--overwrite", action="store_true")
    live.add_argument("--snapshot-dir", type=Path, help="where the s key saves snapshots")
    live.add_argument("--events", metavar="PATH", help="JSON-lines track events: - for stdout")
    live.add_argument("--duration", type=seconds, metavar="S", help="stop after S seconds")
    add_http_arguments(live)
    add_recognizer_arguments(live)
    add_llm_arguments(live)
    live.set_defaults(run=run_live)

    kiosk = commands.add_parser(
        "kiosk", help="unattended live recognition for days (config file, health, metrics)",
        description="Settings: the TOML file, then EDGEFER_<SECTION>_<KEY> environment "
                    "variables, then these flags. The source reconnects with backoff.")
    kiosk.add_argument("--config", type=Path, help="kiosk TOML file (see tools/kiosk.example.toml)")
    kiosk.add_argument("--source", help="override capture.source")
    kiosk.add_argument("--headless", action="store_true", default=None,
                       help="override display.headless")
    kiosk.add_argument("--http-port", type=int, help="override http.port")
    kiosk.add_argument("--no-llm", action="store_true", help="force the LLM second opinion off")
    kiosk.add_argument("--preview", action="store_true", default=None,
                       help="override http.preview: show the picture on the page")
    kiosk.add_argument("--duration", type=seconds, metavar="S", help="stop after S seconds")
    kiosk.set_defaults(run=run_kiosk)


def add_http_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("operator's page (/, /api/status, /healthz, /metrics)")
    group.add_argument("--http-port", type=int, help="serve the page and endpoints on this port")
    group.add_argument("--http-host", default=HttpOptions.host,
                       help="address to listen on (default 127.0.0.1, this machine only; any "
                            "other needs --http-token-env)")
    group.add_argument("--http-token-env", metavar="VAR", default="",
                       help="name of the environment variable holding the access token")
    group.add_argument("--http-insecure-no-token", action="store_true",
                       help="allow a non-loopback --http-host without a token (anyone who can "
                            "reach the port sees the page)")
    group.add_argument("--preview", action="store_true",
                       help="show the annotated picture on the page (off: everything but pixels)")


def run_live(args: argparse.Namespace) -> int:
    if args.headless:
        refuse_without("a window (drop --headless)",
                       "--fullscreen" if args.fullscreen else None,
                       "--snapshot-dir" if args.snapshot_dir else None)
    if args.http_port is None:
        refuse_without("--http-port (the operator's page)", *(
            flag for flag, given in (("--preview", args.preview),
                                     ("--http-token-env", args.http_token_env),
                                     ("--http-insecure-no-token", args.http_insecure_no_token),
                                     ("--http-host", args.http_host != HttpOptions.host))
            if given))
    spec = args.source if args.source is not None else str(args.camera or 0)
    options = LiveOptions(
        capture=CaptureOptions(source=spec, realtime=args.realtime, loop=args.loop),
        recognizer=recognizer_options(args),
        display=DisplayOptions(headless=args.headless, fullscreen=args.fullscreen),
        outputs=OutputOptions(table=args.output, record=args.record, events=args.events,
                              snapshot_dir=args.snapshot_dir, overwrite=args.overwrite),
        http=HttpOptions(enabled=args.http_port is not None, host=args.http_host,
                         port=args.http_port or 0, preview=args.preview,
                         token_env=args.http_token_env,
                         insecure_no_token=args.http_insecure_no_token),
        duration_s=args.duration)
    return _run_session(options, pace_with="--realtime")


def run_kiosk(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from edgefer.apps.kiosk import load_config

    overrides: dict[str, dict[str, Any]] = {}
    if args.source is not None:
        overrides.setdefault("capture", {})["source"] = args.source
    if args.headless:
        overrides.setdefault("display", {})["headless"] = True
    if args.http_port is not None:
        overrides.setdefault("http", {})["port"] = args.http_port
    if args.no_llm:
        overrides.setdefault("llm", {})["enabled"] = False
    if args.preview:
        overrides.setdefault("http", {})["preview"] = True
    options = load_config(args.config, overrides)
    return _run_session(replace(options, duration_s=args.duration),
                        pace_with="capture.realtime = true (EDGEFER_CAPTURE_REALTIME=true)")


def _run_session(options: LiveOptions, pace_with: str) -> int:
    console = make_console(stderr=True)
    session = LiveSession(options, announce=lambda line: console.print(line, highlight=False))
    install_signal_handlers(session)
    stats = session.run()
    print_stats(console, stats)
    if stats.dropped and _unpaced_file(options.capture):
        console.print(f"note: {options.capture.source} was read as fast as it decodes and only "
                      f"the newest frame is kept; set {pace_with} to pace it at its frame rate, "
                      "or use `edgefer score` for a row per frame", highlight=False,
                      soft_wrap=True)
    return 0


def _unpaced_file(capture: CaptureOptions) -> bool:
    """A video file or folder read without --realtime: frames dropped there are the reader
    outrunning the pipeline, not a camera's frames arriving faster than they are processed."""
    return not (capture.realtime or is_camera(capture.source) or is_stream(capture.source))


def print_stats(console: Any, stats: LiveStats) -> None:
    import numpy as np

    latency = np.percentile(stats.latencies_ms, [50, 95]) if stats.latencies_ms else [0, 0]
    console.print(f"{stats.frames} frames in {stats.seconds:.1f} s ({stats.fps:.1f} frames/s), "
                  f"{stats.faces} faces, latency p50 {latency[0]:.1f} ms p95 {latency[1]:.1f} ms, "
                  f"{stats.dropped} frames dropped, {stats.reconnects} reconnects", highlight=False)
