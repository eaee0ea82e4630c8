"""What several commands share: recognizer and LLM flags, and the command line as run."""

from __future__ import annotations

import argparse
import sys

from edgefer.backends.base import ENGINES, PRECISIONS
from edgefer.decide import POLICIES
from edgefer.detect import DETECTOR_MODELS, DetectorOptions
from edgefer.llm.config import LlmConfig
from edgefer.pipeline import RecognizerOptions

MODEL_HELP = (
    "model name in engines/manifest.json. Two truths: vgg_s4_int8 (the default) learned FER2013's "
    "labels, one per image, the figure papers report; vgg_s_ferplus4_int8 learned what ten FER+ "
    "annotators agree on, calls more weak expressions neutral and agrees with people more often. "
    "Without _int8: their float versions. The earlier models kept for comparison are listed, with "
    "their figures, in engines/MODEL_CARD.md")


def command_line() -> str:
    """This invocation as a copyable shell command (recorded beside the figures it produced)."""
    import shlex

    return "edgefer " + " ".join(shlex.quote(a) for a in sys.argv[1:])


def add_recognizer_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("recognition")
    group.add_argument("--model", help=MODEL_HELP)
    group.add_argument("--engine", default="onnxruntime",
                       choices=ENGINES,
                       help="inference engine (default: onnxruntime on the CPU; auto: TensorRT, "
                            "then ONNX Runtime CUDA, then CPU)")
    group.add_argument("--precision", choices=PRECISIONS, default="fp16",
                       help="TensorRT plan precision (with --engine tensorrt/auto)")
    group.add_argument("--detector", choices=DETECTOR_MODELS, default="auto",
                       help="BlazeFace model: auto (default: short on video; on photos short "
                            "and full merged), short (faces within ~2 m) or full "
                            "(small/distant faces, group photos)")
    group.add_argument("--min-face-score", type=float, default=0.5,
                       help="minimum detection confidence (default 0.5)")


def add_llm_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "LLM second opinion (off unless --llm; sends face crops to the endpoint)")
    group.add_argument("--llm", action="store_true",
                       help="ask a vision LLM about uncertain faces (eval: about every face, "
                            "and compare CNN, LLM and cascade)")
    group.add_argument("--llm-base-url", help="OpenAI-compatible endpoint (default: "
                       "$OPENAI_BASE_URL, else api.openai.com); the key comes from $OPENAI_API_KEY")
    group.add_argument("--llm-model", default=LlmConfig.model, help=f"default {LlmConfig.model}")
    group.add_argument("--llm-threshold", type=float, default=LlmConfig.threshold,
                       help="ask when the calibrated confidence is below this "
                            f"(default {LlmConfig.threshold})")
    group.add_argument("--llm-policy", choices=POLICIES, default="override",
                       help="override (default): the LLM's label; fuse: mix probabilities; "
                            "learned: the model fitted by `edgefer llm calibrate` for this LLM "
                            "model and prompt (falls back to override, and says so, without one)")
    group.add_argument("--llm-fusion", metavar="JSON",
                       help="the learned policy's file (default: the user's fusion folder, "
                            "keyed by LLM model and prompt)")
    group.add_argument("--llm-price", type=_prices, metavar="IN,OUT",
                       help="USD per million input and output tokens for the cost estimate "
                            "(default: the built-in table for known OpenAI models, else 0)")
    group.add_argument("--llm-prompt", choices=("top2", "open"), default="top2",
                       help="top2 (default): the LLM chooses between the CNN's two best labels; "
                            "open: any of the seven")
    group.add_argument("--llm-context", action="store_true",
                       help="also send a downscaled copy of the whole frame with each face")
    group.add_argument("--llm-rpm", type=int, default=LlmConfig.requests_per_minute,
                       help=f"requests per minute allowed (default {LlmConfig.requests_per_minute})")
    group.add_argument("--llm-cache", metavar="SQLITE", help="persistent answer cache file")
    group.add_argument("--llm-batch", type=int, default=LlmConfig.batch_size,
                       help=f"faces per request (default {LlmConfig.batch_size})")


def llm_config(args: argparse.Namespace) -> LlmConfig | None:
    if not getattr(args, "llm", False):
        return None
    return LlmConfig(model=args.llm_model, base_url=args.llm_base_url,
                     threshold=args.llm_threshold, policy=args.llm_policy,
                     top2=args.llm_prompt == "top2", cache_path=args.llm_cache,
                     batch_size=args.llm_batch, requests_per_minute=args.llm_rpm,
                     context_frame=args.llm_context, fusion_path=args.llm_fusion,
                     price_input_per_million=args.llm_price[0] if args.llm_price else None,
                     price_output_per_million=args.llm_price[1] if args.llm_price else None)


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
        model=args.model, engine=args.engine, precision=args.precision, llm=llm_config(args),
        detector=DetectorOptions(model=args.detector, min_confidence=args.min_face_score))
