"""``edgefer build``: a TensorRT engine for this GPU from a shipped ONNX model."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from edgefer.backends.base import PRECISIONS


def add_commands(commands: Any) -> None:
    parser = commands.add_parser(
        "build", help="build a TensorRT engine for this GPU (Jetson or desktop NVIDIA)",
        description="Builds engines/plans/<model>-<precision>-<key>.plan with a dynamic-batch "
                    "profile. Afterwards check accuracy: edgefer eval DATA --engine tensorrt.")
    parser.add_argument("--model", help="manifest model name (default: the default model); "
                                        "an int8 entry builds from its float original, at "
                                        "--precision")
    parser.add_argument("--precision", choices=PRECISIONS, default="fp16",
                        help="the engine's precision (default fp16; int8 needs --calibration)")
    parser.add_argument("--max-batch", type=int, default=16, help="most faces per call (16)")
    parser.add_argument("--opt-batch", type=int, default=4, help="typical faces per call (4)")
    parser.add_argument("--workspace-mb", type=int, default=512,
                        help="GPU memory TensorRT may use while building, in MB (512)")
    parser.add_argument("--timing-cache", type=Path, help="reuse/extend a timing cache file")
    parser.add_argument("--calibration", type=Path, metavar="DIR",
                        help="int8: folder of face crops (or full images with --calibration-mode "
                             "detect)")
    parser.add_argument("--calibration-mode", choices=("crops", "detect"), default="crops",
                        help="int8: calibration images are face crops (default) or whole "
                             "images whose faces the detector finds")
    parser.add_argument("--calibration-images", type=int, default=512,
                        help="int8: at most this many calibration images (512)")
    parser.add_argument("--check-only", action="store_true",
                        help="only check that the ONNX model is ready for TensorRT (no GPU needed)")
    parser.set_defaults(run=run_build)


def run_build(args: argparse.Namespace) -> int:
    from rich.table import Table

    from edgefer.backends.build import BuildOptions, build_engine, require_ready_for_tensorrt
    from edgefer.cli.common import make_console
    from edgefer.manifest import float_source, load_model_entry

    console = make_console()
    options = BuildOptions(  # the flags are checked before the model
        precision=args.precision, opt_batch=args.opt_batch, max_batch=args.max_batch,
        workspace_mb=args.workspace_mb, timing_cache=args.timing_cache,
        calibration_dir=args.calibration, calibration_mode=args.calibration_mode,
        calibration_images=args.calibration_images)
    requested = load_model_entry(args.model)
    entry = float_source(requested)  # TensorRT builds from the float graph at any precision
    entry.verify()
    require_ready_for_tensorrt(entry.file)
    instead = f" (the float original of {requested.name}, which TensorRT builds at " \
        f"{options.precision})" if entry.name != requested.name else ""
    console.print(f"{entry.file.name}{instead}: ready for TensorRT (supported operators, dynamic "
                  f"batch, static {entry.input.height}x{entry.input.width} input)",
                  highlight=False, soft_wrap=True)
    if args.check_only:
        return 0
    with console.status("building TensorRT engine (minutes on a Jetson)") as status:
        report = build_engine(entry, options, entry.file.parent,
                              lambda message: status.update(message))
    table = Table(title="TensorRT engine")
    table.add_column("")
    table.add_column("")
    for key, value in (("plan", str(report.plan)), ("precision", report.precision),
                       ("layers", str(report.layers)), ("size", f"{report.size_bytes / 1e6:.2f} MB"),
                       ("build time", f"{report.seconds:.1f} s"),
                       *((k, v) for k, v in report.parts.items())):
        table.add_row(key, value)
    console.print(table)
    console.print(f"next: edgefer eval DATA --engine tensorrt --precision {report.precision}")
    return 0
