"""``edgefer llm calibrate``: measure an LLM endpoint on labelled faces and fit the learned policy."""

from __future__ import annotations

import argparse
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgefer.cli.common import at_least_one, make_console, share
from edgefer.types import EMOTIONS

if TYPE_CHECKING:
    import numpy as np

    from edgefer.llm.config import LlmConfig
    from edgefer.training.cascade import LlmAnswers

MIN_ANSWERED = 50  # answered faces below which the learned policy is not fitted


def add_commands(commands: Any) -> None:
    from edgefer.cli.common import add_llm_arguments

    parser = commands.add_parser("llm", help="the LLM second opinion: calibrate an endpoint")
    sub = parser.add_subparsers(dest="llm_command", required=True, metavar="COMMAND")
    calibrate = sub.add_parser(
        "calibrate", help="measure the endpoint on labelled faces and fit the learned policy",
        description="Asks the configured endpoint about every face crop of a labelled folder "
                    "(cached: an interrupted run resumes; budgeted by --llm-rpm and the daily "
                    "request budget), reports its accuracy and per-class figures against the "
                    "CNN, fits the learned policy on one half and reports it on the other, then "
                    "refits on all faces and stores it (with provenance) for --llm-policy learned.")
    calibrate.add_argument("data_dir", type=Path,
                           help="DIR/<class>/* face crops, or a zip or tar archive of them")
    calibrate.add_argument("--glob", default="*", help="file-name pattern, e.g. 'PublicTest_*'")
    calibrate.add_argument("--exclude-list", type=Path, metavar="CSV")
    calibrate.add_argument("--ferplus-labels", type=Path, metavar="CSV",
                           help="fit to the FER+ majority vote instead of folder labels")
    calibrate.add_argument("--model", help="CNN model name in the manifest (default: its default)")
    calibrate.add_argument("--limit", type=at_least_one, metavar="N",
                           help="a stratified sample of about N faces (budget)")
    calibrate.add_argument("--max-share", type=share, default=0.3, metavar="S",
                           help="the largest share of faces the learned policy may send "
                                "(default 0.3)")
    calibrate.add_argument("--out", type=Path, metavar="JSON",
                           help="where to store the policy (default: --llm-fusion, else the "
                                "user's fusion folder keyed by LLM model and prompt)")
    calibrate.add_argument("--json", type=Path, metavar="OUT", help="write every figure as JSON")
    add_llm_arguments(calibrate, calibrating=True)
    # it asks about every face and fits the policy: no flags for whether, when or how to ask
    calibrate.set_defaults(run=run_calibrate, llm=True, llm_threshold=None, llm_policy=None)


def default_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "edgefer" / "llm-answers.sqlite"


def run_calibrate(args: argparse.Namespace) -> int:
    import shlex

    from edgefer.cli.common import check_reports, llm_config
    from edgefer.cli.llm_tables import ask_llm_about
    from edgefer.errors import InputError
    from edgefer.files import write_json_atomic
    from edgefer.llm.client import why_unanswered
    from edgefer.llm.fusion import fusion_path
    from edgefer.manifest import load_model_entry
    from edgefer.training import cascade
    from edgefer.training.evaluate import EvalOptions, evaluate

    if args.limit is not None and args.limit < MIN_ANSWERED:
        raise InputError(f"--limit {args.limit} is under the {MIN_ANSWERED} answered faces a "
                         "fit needs")
    if args.llm_cache is None:
        args.llm_cache = str(default_cache())
        default_cache().parent.mkdir(parents=True, exist_ok=True)
    config = llm_config(args)
    check_reports(("--out", args.out, ".json"), ("--json", args.json, ".json"))
    console = make_console()
    options = EvalOptions(data_dir=args.data_dir, glob=args.glob, exclude_list=args.exclude_list,
                          ferplus_labels=args.ferplus_labels, model=args.model, limit=args.limit)
    result = evaluate(options)
    answers = ask_llm_about(result, options, config, console)
    if answers.answered.sum() < MIN_ANSWERED:
        raise InputError(f"only {int(answers.answered.sum())} of {len(answers.labels)} faces "
                         f"answered ({why_unanswered(answers.stats.to_dict())}); at least "
                         f"{MIN_ANSWERED} are needed to fit (check the endpoint, the budget or "
                         "--llm-cache, and run again: answers so far are kept)")
    figures = calibration_figures(result.y_true, result.probs, answers, config, args.max_share)
    provenance = {"endpoint": config.resolved_base_url() or "https://api.openai.com/v1",
                  "llm_model": config.model, "prompt": config.prompt,
                  "prompt_version": figures["prompt_version"], "cnn_model": load_model_entry(args.model).name,
                  "data": str(args.data_dir), "glob": args.glob,
                  "labels": "ferplus" if args.ferplus_labels else "folders",
                  "faces": len(result.y_true), "answered": int(answers.answered.sum()),
                  "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                  "held_out": {k: figures["held_out"][k] for k in (
                      "chosen_share_on_first_half", "llm_contribution")},
                  "accuracy": figures["accuracy"]}
    model = cascade.fit_fusion(result.y_true, result.probs, answers, args.max_share,
                               provenance=provenance)
    path = args.out or fusion_path(config.model, config.prompt, config.fusion_path)
    model.save(path)
    console.print(calibration_markdown(figures, config), markup=False, highlight=False,
                  soft_wrap=True)
    share = model.provenance["share_sent_on_fitting_data"]
    why = "" if model.asks else ": asking did not beat the CNN out of fold"
    where = f" --llm-fusion {shlex.quote(str(path))}" \
        if path != fusion_path(config.model, config.prompt) else ""
    console.print(f"learned policy stored in {path} (sends {share:.0%} "
                  f"of these faces{why}); use it with --llm-policy learned --llm-model {config.model} "
                  f"--llm-prompt {config.prompt}{where}", markup=False, highlight=False,
                  soft_wrap=True)
    if args.json:
        write_json_atomic(args.json, {**figures, "fusion_file": str(path)})
    return 0


def calibration_figures(y: np.ndarray, cnn_probs: np.ndarray, answers: LlmAnswers,
                        config: LlmConfig, max_share: float) -> dict[str, Any]:
    from edgefer.llm.constants import PROMPT_VERSION
    from edgefer.training import cascade, metrics

    held = cascade.held_out_figures(y, cnn_probs, answers, max_share)
    return {
        "prompt_version": PROMPT_VERSION,
        "accuracy": {"cnn": metrics.accuracy(y, cnn_probs.argmax(1)),
                     "llm": cascade.llm_alone(y, answers.labels)["accuracy"],
                     "answered": float(answers.answered.mean())},
        "per_class_accuracy": {"cnn": cascade.per_class_accuracy(y, cnn_probs.argmax(1)),
                               "llm": cascade.per_class_accuracy(y, answers.labels)},
        "llm_confusion": metrics.confusion_matrix(
            y[answers.answered], answers.labels[answers.answered]).tolist(),
        "held_out": held,
        "cost": cascade.cost_report(held, config),
        "llm_stats": answers.stats.to_dict(),
    }


def calibration_markdown(figures: dict[str, Any], config: LlmConfig) -> str:
    from edgefer.cli.llm_tables import cost_line, held_out_markdown

    accuracy = figures["accuracy"]
    lines = [f"LLM {config.model}, {config.prompt} prompt: accuracy {accuracy['llm']:.4f} "
             f"(answered {accuracy['answered']:.1%}); CNN {accuracy['cnn']:.4f}", "",
             "| class | CNN recall | LLM recall |", "|---|---:|---:|"]
    per_class = figures["per_class_accuracy"]
    for name in EMOTIONS:
        cnn, llm = per_class["cnn"][name], per_class["llm"][name]
        if cnn is not None:
            lines.append(f"| {name} | {cnn:.3f} | {llm:.3f} |")
    lines += ["", "LLM confusion (rows: true, columns: answered; answered faces only):", "",
              "| | " + " | ".join(n[:4] for n in EMOTIONS) + " |", "|---" * (len(EMOTIONS) + 1) + "|"]
    lines += [f"| {name} | " + " | ".join(str(v) for v in row) + " |"
              for name, row in zip(EMOTIONS, figures["llm_confusion"], strict=True)]
    lines += ["", *held_out_markdown(figures["held_out"]), "", cost_line(figures["cost"])]
    return "\n".join(lines)
