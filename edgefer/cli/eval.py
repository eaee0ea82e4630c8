"""``edgefer eval``: metrics tables, confusion matrix (text and PNG), calibration, selective table."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgefer.cli.common import (
    add_engine_arguments,
    add_llm_arguments,
    at_least_one,
    check_reports,
    make_console,
    precision,
    refuse_without,
    share,
)
from edgefer.cli.llm_tables import ask_llm_about, cost_line, held_out_markdown
from edgefer.detect import DETECTOR_MODELS
from edgefer.errors import InputError
from edgefer.training.evaluate import EvalOptions
from edgefer.types import EMOTIONS

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

    from edgefer.llm.config import LlmConfig
    from edgefer.training.evaluate import EvalResult


def add_commands(commands: Any) -> None:
    parser = commands.add_parser(
        "eval", help="evaluate the model on an image-folder dataset",
        description="Accuracy, macro precision/recall/F1, per-class table, confusion matrix, "
                    "baselines, calibration (ECE) and the selective-prediction table that sets "
                    "the LLM fallback threshold.")
    parser.add_argument("data_dir", type=Path,
                        help="DIR/<class>/* images, or a zip or tar archive of them")
    parser.add_argument("--glob", default="*", help="file-name pattern, e.g. 'PrivateTest_*'")
    parser.add_argument("--exclude-list", type=Path, metavar="CSV",
                        help="images to drop (first column), e.g. test_train_duplicates.csv")
    parser.add_argument("--ferplus-labels", type=Path, metavar="CSV",
                        help="score against the FER+ majority vote (ferplus_labels.csv), and "
                             "report the folder (FER2013) labels of the same images beside it; "
                             "images whose majority is contempt/unknown/not-a-face are dropped")
    parser.add_argument("--mode", choices=("crops", "detect"), default="crops",
                        help="crops: images are face crops (default); detect: run the face "
                             "detector and aligner first, as in live use")
    parser.add_argument("--detector", choices=DETECTOR_MODELS,
                        help="with --mode detect: short (default: what the live path runs on "
                             "video), full, or auto (short and full merged on these stills)")
    add_engine_arguments(parser)
    parser.add_argument("--limit", type=at_least_one, metavar="N",
                        help="a stratified sample of about N images (class shares kept, every "
                             "class at least one)")
    parser.add_argument("--json", type=Path, metavar="OUT", help="write every figure as JSON")
    parser.add_argument("--confusion-png", type=Path, metavar="OUT.png", help="confusion matrix plot")
    parser.add_argument("--cascade", action="store_true",
                        help="implies --llm: the cascade curve over shares of faces sent, and an "
                             "operating point chosen on one half and reported on the other")
    parser.add_argument("--max-share", type=share, default=1.0, metavar="S",
                        help="--cascade: the largest share of faces the held-out operating "
                             "points may send (default 1)")
    parser.add_argument("--markdown", type=Path, metavar="OUT.md", help="write the LLM tables")
    parser.add_argument("--record", metavar="KEY",
                        help="store accuracy and macro-F1 under metrics.KEY in the manifest, "
                             "with this command line")
    add_llm_arguments(parser)
    parser.set_defaults(run=run_eval)


def run_eval(args: argparse.Namespace) -> int:
    from rich.progress import Progress

    from edgefer.files import write_json_atomic
    from edgefer.training.evaluate import evaluate, report

    if args.mode != "detect":
        refuse_without("--mode detect", "--detector" if args.detector else None)
    config = llm_settings(args)
    check_reports(("--json", args.json, ".json"), ("--confusion-png", args.confusion_png, ".png"),
                  ("--markdown", args.markdown, ".md"))
    options = EvalOptions(data_dir=args.data_dir, glob=args.glob, exclude_list=args.exclude_list,
                          ferplus_labels=args.ferplus_labels, mode=args.mode,
                          detector=args.detector or EvalOptions.detector,
                          model=args.model, engine=args.engine, precision=precision(args),
                          limit=args.limit)
    console = make_console()
    with Progress(console=console, transient=True, disable=not console.is_terminal) as progress:
        task = progress.add_task("evaluating", total=None)
        result = evaluate(options, lambda done, total: progress.update(task, completed=done,
                                                                        total=total))
    figures = report(result)
    print_report(console, figures)
    if args.json:
        write_json_atomic(args.json, figures)
    if args.confusion_png:
        plot_confusion(figures["confusion_matrix"], args.confusion_png)
    if config is not None:
        figures["llm"] = run_llm_comparison(args, config, options, result, console)
        if args.json:
            write_json_atomic(args.json, figures)
    if args.record:
        record_metric(args.record, figures, options)
        console.print(f"recorded {figures['accuracy']:.2%} as {figures['model']}'s metric "
                      f"{args.record!r} in {options.manifest}", highlight=False, soft_wrap=True)
    return 0


def llm_settings(args: argparse.Namespace) -> LlmConfig | None:
    """The LLM comparison's settings, None without --llm or --cascade; checked before the
    evaluation, which can take minutes, rather than after it."""
    from edgefer.cli.common import llm_config

    args.llm = args.llm or args.cascade
    config = llm_config(args)
    if config is None and args.markdown:
        raise InputError("--markdown writes the LLM tables: add --llm or --cascade")
    if config is not None and args.mode != "crops":
        raise InputError("the LLM comparison evaluates pre-cropped faces; use --mode crops")
    return config


def run_llm_comparison(args: argparse.Namespace, config: LlmConfig, options: EvalOptions,
                       result: EvalResult, console: Console) -> dict[str, Any]:
    from edgefer.llm.client import why_unanswered
    from edgefer.training import cascade

    answers = ask_llm_about(result, options, config, console)
    if not answers.answered.any():  # nothing to compare: the CNN's figures above stand
        raise InputError(f"the LLM answered none of the {len(answers.labels)} faces asked "
                         f"({why_unanswered(answers.stats.to_dict())}); check --llm-base-url, "
                         "$OPENAI_API_KEY and the server (--debug logs each failure)")
    figures = cascade.cascade_report(result.y_true, result.probs, answers, config.threshold,
                                     config, max_share=args.max_share)
    markdown = cascade_markdown(figures, args.cascade, config)
    console.print(markdown, markup=False, highlight=False, soft_wrap=True)
    if args.markdown:
        args.markdown.write_text(markdown + "\n")
    return figures


def cascade_markdown(figures: dict[str, Any], curve: bool, config: LlmConfig) -> str:
    """The comparison (and optionally the curves and the held-out table) as markdown."""
    lines = [f"LLM: {config.model} ({'top-2 prompt' if config.top2 else 'open prompt'}), "
             f"answered {figures['share_answered']:.1%} of faces", "",
             "| | accuracy | macro precision | macro recall | macro F1 |", "|---|---:|---:|---:|---:|"]
    for name, row in figures["rows"].items():
        lines.append(f"| {name} | {row['accuracy']:.4f} | {row['macro_precision']:.4f} | "
                     f"{row['macro_recall']:.4f} | {row['macro_f1']:.4f} |")
    stats = figures["llm_stats"]
    lines += ["", "requests {requests}, prompt tokens {prompt_tokens}, completion tokens "
              "{completion_tokens}, refusals {refusals}, invalid replies {invalid_replies}, "
              "failed requests {failed_requests}, cache hits {cache_hits}".format(**stats)]
    if curve:
        lines += ["", "| share sent to LLM | replace policy, all faces |", "|---:|---:|"]
        lines += [f"| {row['share_sent']:.0%} | {row['accuracy']:.4f} |" for row in figures["curve"]]
        lines += ["", *held_out_markdown(figures["held_out"]), "", cost_line(figures["cost"])]
    return "\n".join(lines)


def record_metric(key: str, figures: dict[str, Any], options: EvalOptions) -> None:
    """Files the figures under the model that produced them (``figures["model"]``: on a GPU or
    PyTorch engine, an int8 entry's float source), never under the name asked for."""
    from edgefer.cli.common import command_line
    from edgefer.manifest import load_model_entry, update_manifest

    entry = load_model_entry(figures["model"], options.manifest)
    raw = dict(entry.raw)
    raw["metrics"] = {**raw["metrics"], key: {
        "value": round(figures["accuracy"], 4), "macro_f1": round(figures["macro_f1"], 4),
        "n": figures["n"], "command": command_line()}}
    update_manifest(entry.name, raw, options.manifest)


def print_report(console: Console, figures: dict[str, Any]) -> None:
    """The headline table, notes on what the figures cover, per-class figures, the confusion
    matrix, calibration and selective prediction, in that order."""
    console.print(_headline(figures))
    for line in _notes(figures):
        console.print(line)
    console.print(_per_class(figures))
    console.print(_confusion(figures))
    console.print(f"temperature {figures['temperature']:.3f}: ECE {figures['ece_before_temperature']:.4f}"
                  f" before, {figures['ece_after_temperature']:.4f} after")
    console.print(_selective(figures))


def _table(title: str, columns: tuple[str, ...]) -> Table:
    from rich.table import Table

    table = Table(title=title)
    for column in columns:
        table.add_column(column, justify="right")
    return table


def _headline(figures: dict[str, Any]) -> Table:
    headline = _table(f"edgefer eval: {figures['model']} on {figures['n']} images",
                      ("", "accuracy", "macro precision", "macro recall", "macro F1"))
    rows = [("model", figures), ("random (mean of 10)", figures["baselines"]["random"]),
            ("majority class", figures["baselines"]["majority"])]
    if "restricted_to_present_classes" in figures:
        rows.insert(1, ("model, present classes only", figures["restricted_to_present_classes"]))
    missed = figures["n"] - figures["faces_found"]
    if missed:  # two bases: say which figure stands on which
        headline.caption = (f"no face found in {missed} images: the model row's accuracy (and "
                            "the label-set line) counts them as wrong; every other figure covers the "
                            f"{figures['faces_found']} found faces (the model's accuracy on "
                            f"them: {figures['accuracy_on_found_faces']:.4f})")
    for name, f in rows:
        headline.add_row(name, f"{f['accuracy']:.4f}", f"{f['macro_precision']:.4f}",
                         f"{f['macro_recall']:.4f}", f"{f['macro_f1']:.4f}")
    return headline


def _notes(figures: dict[str, Any]) -> list[str]:
    lines = []
    if "label_sets" in figures:
        sets = figures["label_sets"]
        lines.append(f"same images, both label sets: FER2013 labels accuracy "
                     f"{sets['fer2013']['accuracy']:.4f} (macro F1 {sets['fer2013']['macro_f1']:.4f}); "
                     f"FER+ majority accuracy {sets['ferplus']['accuracy']:.4f} "
                     f"(macro F1 {sets['ferplus']['macro_f1']:.4f})")
    if "per_sequence" in figures:
        lines.append(f"per sequence ({figures['per_sequence']['sequences']} sequences, mean "
                     f"probability of their frames): accuracy {figures['per_sequence']['accuracy']:.4f}")
    lines.append("  ".join([
        f"excluded by list: {figures['excluded_by_list']}",
        f"dropped (no FER+ 7-class majority): {figures['dropped_without_ferplus_majority']}",
        f"faces found: {figures['faces_found']}/{figures['n']}"]))
    return lines


def _per_class(figures: dict[str, Any]) -> Table:
    per_class = _table("per class", ("class", "precision", "recall", "F1", "support"))
    for name, f in figures["per_class"].items():
        per_class.add_row(name, f"{f['precision']:.3f}", f"{f['recall']:.3f}", f"{f['f1']:.3f}",
                          str(f["support"]))
    return per_class


def _confusion(figures: dict[str, Any]) -> Table:
    confusion = _table("confusion matrix (rows: true, columns: predicted)",
                       ("", *(name[:4] for name in EMOTIONS)))
    confusion.columns[0].justify = "left"  # the true classes' names
    for name, row in zip(EMOTIONS, figures["confusion_matrix"], strict=True):
        confusion.add_row(name, *(str(v) for v in row))
    return confusion


def _selective(figures: dict[str, Any]) -> Table:
    selective = _table("selective prediction (faces below the threshold go to the LLM)",
                       ("confidence >=", "coverage", "accuracy kept", "accuracy deferred"))
    for row in figures["selective"]:
        selective.add_row(f"{row['threshold']:.2f}", f"{row['coverage']:.3f}",
                          f"{row['accuracy_kept']:.4f}", f"{row['accuracy_deferred']:.4f}")
    return selective


def plot_confusion(matrix: list[list[int]], path: Path) -> None:
    from edgefer.errors import require

    matplotlib = require("matplotlib", "plot")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    counts = np.asarray(matrix, dtype=float)
    shares = counts / np.clip(counts.sum(1, keepdims=True), 1, None)
    figure, axis = plt.subplots(figsize=(6.5, 5.5))
    image = axis.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    axis.set_xticks(range(len(EMOTIONS)), EMOTIONS, rotation=45, ha="right")
    axis.set_yticks(range(len(EMOTIONS)), EMOTIONS)
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    for i in range(len(EMOTIONS)):
        for j in range(len(EMOTIONS)):
            axis.text(j, i, f"{int(counts[i, j])}", ha="center", va="center", fontsize=8,
                      color="white" if shares[i, j] > 0.5 else "black")
    figure.colorbar(image, label="share of true class")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
