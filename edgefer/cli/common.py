"""What several commands share: recognizer and LLM flags, and the command line as run."""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from edgefer.backends.base import ENGINES, PRECISIONS
from edgefer.decide import POLICIES
from edgefer.detect import DETECTOR_MODELS, DetectorOptions
from edgefer.errors import InputError
from edgefer.llm.config import LlmConfig
from edgefer.pipeline import RecognizerOptions

if TYPE_CHECKING:
    from rich.console import Console

MODEL_HELP = (
    "model name in engines/manifest.json. Two truths: vgg_s4_int8 (the default) learned FER2013's "
    "labels, one per image, the figure papers report; vgg_s_ferplus4_int8 learned what ten FER+ "
    "annotators agree on, calls more weak expressions neutral and agrees with people more often. "
    "Without _int8: their float versions. The earlier models kept for comparison are listed, with "
    "their figures, in engines/MODEL_CARD.md")


def make_console(stderr: bool = False) -> Console:
    """A rich console that outlives its reader: when the pipe it prints into closes
    (``edgefer eval ... | head``), the rest of its printing is discarded and the command carries
    on, writing its files and returning its own exit code (rich's default exits with 1)."""
    return _pipe_tolerant_console()(stderr=stderr)


@functools.cache
def _pipe_tolerant_console() -> type[Console]:
    from rich.console import Console  # here: `edgefer --help` does not load rich

    class PipeTolerantConsole(Console):
        def on_broken_pipe(self) -> None:
            self.quiet = True
            devnull = os.open(os.devnull, os.O_WRONLY)
            with contextlib.suppress(OSError, ValueError):  # a stream with no descriptor
                os.dup2(devnull, self.file.fileno())  # the interpreter's last flush included
            os.close(devnull)

    return PipeTolerantConsole


def command_line() -> str:
    """This invocation as a copyable shell command (recorded beside the figures it produced)."""
    import shlex

    return "edgefer " + " ".join(shlex.quote(a) for a in sys.argv[1:])


def check_reports(*outputs: tuple[str, Path | None, str]) -> None:
    """Each (flag, path or None, suffix) a command will write its figures to, checked before
    minutes of evaluation (or paid LLM requests) rather than after. Replaced if present."""
    from edgefer.sinks import check_output

    for flag, path, suffix in outputs:
        if path is not None:
            check_output(path, True, (suffix,), flag)


def add_engine_arguments(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """Which model runs, and on what: every command that classifies faces."""
    parser.add_argument("--model", help=MODEL_HELP)
    parser.add_argument("--engine", default="onnxruntime", choices=ENGINES,
                        help="inference engine (default: onnxruntime on the CPU; auto: TensorRT, "
                             "then ONNX Runtime CUDA, then CPU)")
    parser.add_argument("--precision", choices=PRECISIONS,
                        help="TensorRT plan precision (with --engine tensorrt/auto; default fp16)")


def precision(args: argparse.Namespace) -> str:
    """The TensorRT plan precision; refused with an engine that runs no plan."""
    if args.engine not in ("tensorrt", "auto"):
        refuse_without("--engine tensorrt or auto", "--precision" if args.precision else None)
    return args.precision or "fp16"


def refuse_without(needed: str, *given: str | None) -> None:
    """Flags that mean something only with ``needed``, given without it: an error rather than
    silently ignored (the user meant something by them). ``given``: the flags used, or None."""
    flags = [flag for flag in given if flag]
    if flags:
        raise InputError(f"{', '.join(flags)} {'needs' if len(flags) == 1 else 'need'} {needed}")


def add_recognizer_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("recognition")
    add_engine_arguments(group)
    group.add_argument("--detector", choices=DETECTOR_MODELS, default="auto",
                       help="BlazeFace model: auto (default: short on video; on photos short "
                            "and full merged), short (faces within ~2 m) or full "
                            "(small/distant faces, group photos)")
    group.add_argument("--min-face-score", type=fraction, default=0.5,
                       help="minimum detection confidence (default 0.5)")


def add_llm_arguments(parser: argparse.ArgumentParser, calibrating: bool = False) -> None:
    """The --llm-* flags; ``calibrating`` (``llm calibrate``, which asks about every face and
    fits the policy) leaves out the three that say whether, when and how a face's answer is
    used: given there, they are refused, not ignored."""
    group = parser.add_argument_group(
        "LLM second opinion (off unless --llm; sends face crops to the endpoint)"
        if not calibrating else "LLM endpoint (sends every face crop to it)")
    if not calibrating:
        group.add_argument("--llm", action="store_true",
                           help="ask a vision LLM about uncertain faces (eval: about every face, "
                                "and compare CNN, LLM and cascade)")
    group.add_argument("--llm-base-url", help="OpenAI-compatible endpoint (default: "
                       "$OPENAI_BASE_URL, else api.openai.com); the key comes from $OPENAI_API_KEY")
    group.add_argument("--llm-model", help=f"default {LlmConfig.model}")
    if not calibrating:
        group.add_argument("--llm-threshold", type=fraction,
                           help="ask when the calibrated confidence is below this "
                                f"(default {LlmConfig.threshold})")
        group.add_argument("--llm-policy", choices=POLICIES,
                           help="override (default): the LLM's label; fuse: mix probabilities; "
                                "learned: the model fitted by `edgefer llm calibrate` for this "
                                "LLM model and prompt (falls back to override, and says so, "
                                "without one)")
    group.add_argument("--llm-fusion", metavar="JSON",
                       help="the learned policy's file (default: the user's fusion folder, "
                            "keyed by LLM model and prompt)")
    group.add_argument("--llm-price", type=_prices, metavar="IN,OUT",
                       help="USD per million input and output tokens for the cost estimate "
                            "(default: the built-in table for known OpenAI models, else 0)")
    group.add_argument("--llm-prompt", choices=("top2", "open"),
                       help="top2 (default): the LLM chooses between the CNN's two best labels; "
                            "open: any of the seven")
    group.add_argument("--llm-context", action="store_true",
                       help="also send a downscaled copy of the whole frame with each face")
    group.add_argument("--llm-rpm", type=at_least_one,
                       help=f"requests per minute allowed (default {LlmConfig.requests_per_minute})")
    group.add_argument("--llm-cache", metavar="SQLITE", help="persistent answer cache file")
    group.add_argument("--llm-batch", type=at_least_one,
                       help=f"faces per request (default {LlmConfig.batch_size})")


# Each --llm-* flag and the LlmConfig field it sets; unset flags (None) keep LlmConfig's default.
LLM_FLAGS = {"base_url": "base_url", "model": "model", "threshold": "threshold",
             "policy": "policy", "fusion": "fusion_path", "rpm": "requests_per_minute",
             "cache": "cache_path", "batch": "batch_size"}


def llm_config(args: argparse.Namespace) -> LlmConfig | None:
    """The LLM settings of ``--llm``; None without it. An --llm-* flag given without --llm is
    an error rather than silently ignored: the user meant to ask the LLM."""
    given = {flag: getattr(args, f"llm_{flag}") for flag in (*LLM_FLAGS, "prompt", "price")}
    given = {flag: value for flag, value in given.items() if value is not None}
    if args.llm_context:
        given["context"] = True
    if not getattr(args, "llm", False):
        refuse_without("--llm", *(f"--llm-{flag.replace('_', '-')}" for flag in given))
        return None
    settings = {field: given[flag] for flag, field in LLM_FLAGS.items() if flag in given}
    price_in, price_out = given.get("price", (None, None))
    return LlmConfig(**settings, top2=given.get("prompt", "top2") == "top2",
                     context_frame=args.llm_context, price_input_per_million=price_in,
                     price_output_per_million=price_out)


def fraction(text: str) -> float:
    """An argparse type: a number within [0, 1] (a confidence, a weight)."""
    value = float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be within [0, 1], got {text}")
    return value


def share(text: str) -> float:
    """An argparse type: a share of faces within (0, 1] (none at all is not a share)."""
    value = float(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {text}")
    return value


def at_least_one(text: str) -> int:
    """An argparse type: a whole number >= 1 (a count, a rate)."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text}")
    return value


def seconds(text: str) -> float:
    """An argparse type: a duration > 0."""
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0 seconds, got {text}")
    return value


def _prices(text: str) -> tuple[float, float]:
    try:
        price_in, price_out = (float(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected IN,OUT in USD per million tokens, "
                                         f"e.g. 0.15,0.60; got {text!r}") from None
    if min(price_in, price_out) < 0:
        raise argparse.ArgumentTypeError(f"prices must be >= 0, got {text!r}")
    return price_in, price_out


def recognizer_options(args: argparse.Namespace) -> RecognizerOptions:
    return RecognizerOptions(
        model=args.model, engine=args.engine, precision=precision(args), llm=llm_config(args),
        detector=DetectorOptions(model=args.detector, min_confidence=args.min_face_score))
