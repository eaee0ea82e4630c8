"""``edgefer train``: argument parsing and rich progress for ``edgefer.training.train``."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path
from typing import Any

from rich.markup import escape

from edgefer.cli.common import command_line, make_console
from edgefer.errors import EdgeferError, InputError, ModelError, OutputError
from edgefer.manifest import update_manifest
from edgefer.training.recipe import Recipe
from edgefer.training.train import EpochStats, TrainData, checkpoint_to_resume


def add_commands(commands: Any) -> None:
    parser = commands.add_parser(
        "train", help="train the emotion CNN on an image-folder dataset",
        description="Train a CNN on DIR/<class>/*.jpg (FER2013 layout). Checkpoints go to --out "
                    "every epoch; --resume continues an interrupted run.")
    parser.add_argument("train_dir", help="training images, DIR/<class>/*, or a zip or tar "
                        "archive of them")
    parser.add_argument("--val", required=True, help="validation images, DIR/<class>/*")
    parser.add_argument("--val-glob", default="*", help="file-name pattern for validation images, "
                        "e.g. 'PublicTest_*' (default: all)")
    parser.add_argument("--train-glob", default="*", help="file-name pattern for training images")
    parser.add_argument("--ferplus", metavar="CSV", help="FER+ votes (ferplus_labels.csv) used as "
                        "soft targets, weighted by the recipe's ferplus_weight")
    parser.add_argument("--recipe", metavar="TOML", help="hyperparameters (default: built-in "
                        "recipe; with --resume, the run folder's recipe.toml)")
    parser.add_argument("--epochs", type=int, help="override the recipe's epoch count")
    parser.add_argument("--arch", help="override the recipe's architecture")
    parser.add_argument("--threads", type=int, help="override the recipe's torch thread count")
    parser.add_argument("--seed", type=int, help="override the recipe's random seed (another "
                        "cycle of the same recipe draws different batches and augmentations)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="where to train: cuda needs a CUDA build of torch; auto (default) "
                             "uses the GPU when PyTorch sees one. Not part of the recipe: a run "
                             "resumes on either device")
    parser.add_argument("--out", required=True, help="run folder for checkpoints and history")
    parser.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    parser.add_argument("--overwrite", action="store_true",
                        help="start over in a run folder that holds a run (otherwise refused)")
    parser.add_argument("--init", metavar="PT",
                        help="start from these weights (a checkpoint or a shipped .pt): the same "
                             "architecture fine-tunes; a narrower one of the same layout (vgg_s "
                             "for vgg_m) is widened first, keeping what it computes")
    parser.add_argument("--teacher", metavar="PT", action="append", default=[],
                        help="a checkpoint to distil from (repeat for an ensemble; recipes with "
                             "teacher_weight > 0)")
    parser.add_argument("--crop-cache", metavar="DIR",
                        help="where live-framed training crops are cached (recipes with "
                             "live_framing > 0; default ~/.cache/edgefer/crops)")
    parser.set_defaults(run=run_train)
    add_export_command(commands)
    add_quantize_command(commands)


def run_train(args: argparse.Namespace) -> int:
    from edgefer.training import train

    out = Path(args.out)
    if args.resume:
        checkpoint_to_resume(out)  # refused before minutes of loading data
    if not args.resume and not args.overwrite and (out / "last.pt").exists():
        raise OutputError(f"{out} holds a run (last.pt): pass --resume to continue it, or "
                          "--overwrite to start over")
    recipe = run_recipe(args.recipe, out / "recipe.toml" if args.resume else None)
    overrides = {k: v for k, v in (("epochs", args.epochs), ("arch", args.arch),
                                   ("threads", args.threads), ("seed", args.seed))
                 if v is not None}
    recipe = recipe.replace(**overrides)
    data = TrainData(args.train_dir, args.val, args.train_glob, args.val_glob, args.ferplus,
                     args.crop_cache, args.init, tuple(args.teacher))
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    try:
        with RichObserver() as observer:
            train.train(recipe, data, args.out, resume=args.resume, observer=observer,
                        device=args.device, command=command_line())
    except EdgeferError:
        if created and not (out / "last.pt").exists():  # refused before an epoch: no debris
            shutil.rmtree(out, ignore_errors=True)
        raise
    return 0


def run_recipe(given: str | None, saved: Path | None) -> Recipe:
    """The recipe given; else, resuming, the one the run saved; else the built-in one."""
    if given:
        return Recipe.load(given)
    return Recipe.load(saved) if saved is not None and saved.is_file() else Recipe()


class RichObserver:
    """A progress bar per epoch (and per data preparation that takes minutes) and a line per
    finished epoch; where output is no terminal (a log file), the lines alone, and one where a
    preparation starts and ends."""

    def __enter__(self) -> RichObserver:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.console = make_console()
        self.progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[note]}"), TimeElapsedColumn(), TimeRemainingColumn(),
            console=self.console, transient=True, disable=not self.console.is_terminal)
        self.progress.__enter__()
        self.task: Any = None
        self.shown = ""  # the description of the bar shown
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.__exit__(*exc)

    def preparing(self, what: str, done: int, total: int) -> None:
        """A bar in a terminal; in a log file, a line where it starts and one where it ends."""
        if not self.console.is_terminal and done in (1, total):
            said = "done" if done == total else \
                f"started on {total} images (once: cached for later runs)"
            self.console.print(f"{escape(what)}: {said}", highlight=False, soft_wrap=True)
        self._show(escape(what), done, total, note="")

    def epoch_started(self, epoch: int, epochs: int, steps: int) -> None:
        self._show(f"epoch {epoch}/{epochs}", 0, steps, note="")

    def step_done(self, loss: float, lr: float) -> None:
        self.progress.update(self.task, advance=1, note=f"loss {loss:.3f} lr {lr:.4f}")

    def _show(self, description: str, done: int, total: int, note: str) -> None:
        """One bar at a time (``description`` is markup): a new stage replaces the last one."""
        if self.task is not None and self.shown != description:
            self.progress.remove_task(self.task)
            self.task = None
        if self.task is None:
            self.task = self.progress.add_task(description, total=total, note=note)
            self.shown = description
        self.progress.update(self.task, completed=done, note=note)

    def epoch_done(self, stats: EpochStats) -> None:
        mark = " [green]best[/]" if stats.best else ""
        self.console.print(
            f"epoch {stats.epoch:3d}  train loss {stats.train_loss:.4f} acc {stats.train_accuracy:.4f}"
            f"  val loss {stats.val_loss:.4f} acc {stats.val_accuracy:.4f}"
            f" macro-F1 {stats.val_macro_f1:.4f}"
            + (f" live-framed acc {stats.val_live_accuracy:.4f}" if stats.val_live_accuracy else "")
            + f"  lr {stats.lr:.5f}  {stats.seconds:.0f}s{mark}",
            soft_wrap=True)  # one line per epoch, also in a log file (no terminal width)


def add_export_command(commands: Any) -> None:
    parser = commands.add_parser(
        "export", help="export a checkpoint to ONNX, calibrate it and add it to the manifest",
        description="Writes NAME.onnx (opset 17, dynamic batch) and NAME.pt beside the manifest "
                    "(engines/, or the folder of $EDGEFER_MANIFEST: export into a copy of "
                    "engines/ to keep the checkout's models), checks onnx.checker and PyTorch "
                    "parity on the validation images, fits the temperature on them, and records "
                    "the model in the manifest. A name already there is refused without "
                    "--overwrite.")
    parser.add_argument("checkpoints", type=Path, nargs="+", metavar="CHECKPOINT",
                        help="best.pt or last.pt from 'edgefer train'; several export one "
                             "ensemble, their logits averaged (each with its --recipe)")
    parser.add_argument("--name", required=True, help="model name in the manifest")
    parser.add_argument("--val", required=True, help="validation images, DIR/<class>/*")
    parser.add_argument("--val-glob", default="*", help="e.g. 'PublicTest_*'")
    parser.add_argument("--recipe", required=True, nargs="+", dest="recipes",
                        help="the recipe file the run used (one per checkpoint, in order)")
    parser.add_argument("--tta", choices=("none", "flip"), default="none",
                        help="flip: average the model with its mirror image inside the ONNX graph")
    parser.add_argument("--weights", choices=("model", "ema"), default="model",
                        help="a last.pt's final weights (model) or its weight average (ema); "
                             "best.pt holds the weight average as model")
    parser.add_argument("--ferplus-labels", metavar="CSV",
                        help="judge and calibrate against the FER+ majority (models trained to FER+)")
    parser.add_argument("--license", metavar="TEXT",
                        help="the weights' license and provenance, recorded in the manifest "
                             "(int8 copies inherit it; default: not stated)")
    parser.add_argument("--default", action="store_true", help="make it the manifest's default")
    parser.add_argument("--overwrite", action="store_true", help="replace a model of this name")
    parser.set_defaults(run=run_export)


def add_quantize_command(commands: Any) -> None:
    parser = commands.add_parser(
        "quantize", help="an int8 copy of a model for fast CPU inference (ONNX Runtime)",
        description="Static int8 quantization (QDQ, per-channel) calibrated on validation images; "
                    "records accuracy and agreement with the float model in the manifest.")
    parser.add_argument("--model", help="the float model to quantize (default: the one the "
                        "manifest's default was quantized from)")
    parser.add_argument("--name", required=True, help="manifest name of the int8 model")
    parser.add_argument("--val", required=True, help="validation images, DIR/<class>/*")
    parser.add_argument("--val-glob", default="*", help="e.g. 'PublicTest_*'")
    parser.add_argument("--ferplus-labels", metavar="CSV",
                        help="judge and calibrate against the FER+ majority (models trained to FER+)")
    parser.add_argument("--default", action="store_true", help="make it the manifest's default")
    parser.add_argument("--overwrite", action="store_true", help="replace a model of this name")
    parser.set_defaults(run=run_quantize)


def run_quantize(args: argparse.Namespace) -> int:
    from edgefer.manifest import float_source, load_model_entry
    from edgefer.training import export

    check_model_name(args.name, args.overwrite)
    console = make_console()
    requested = load_model_entry(args.model)
    source = float_source(requested)
    if args.name in (source.name, requested.name):
        raise InputError(f"--name {args.name!r} is the model being quantized: its float file "
                         "would be replaced by the int8 one; choose another --name")
    source.verify()
    if source.name != requested.name:
        console.print(f"quantizing {source.name}, the float original of {requested.name} (an "
                      "int8 model is not quantized twice)", highlight=False, soft_wrap=True)
    with console.status("quantizing and checking on the validation images"):
        target, figures = export.quantize_int8(source, args.name, args.val, args.val_glob,
                                              ferplus_csv=args.ferplus_labels)
        entry = export.quantized_entry(source, target, figures, command_line())
        update_manifest(args.name, entry, make_default=args.default)
    console.print(f"wrote {target} ({target.stat().st_size / 1e6:.1f} MB): validation accuracy "
                  f"{figures['val_accuracy']:.4f} (float {figures['float_val_accuracy']:.4f}), "
                  f"agreement {figures['agreement_with_float']:.4f}")
    return 0


def check_model_name(name: str, overwrite: bool) -> None:
    """A new model's name: a plain file name (NAME.onnx is written beside the manifest, so
    ``../x`` or ``a/b`` would write elsewhere than the manifest records), and one already in the
    manifest is replaced only when asked: without EDGEFER_MANIFEST, the checkout's engines/."""
    import re

    from edgefer.manifest import MANIFEST_PATH, read_manifest

    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
        raise InputError(f"--name {name!r}: use letters, digits, '_', '-' and '.' (it names "
                         "files beside the manifest)")
    if not MANIFEST_PATH.is_file():  # a new one would list no detectors: nothing could run
        raise ModelError(f"no manifest at {MANIFEST_PATH}: models are added to a copy of the "
                         "repository's engines/ folder (cp -r engines DIR, then "
                         "EDGEFER_MANIFEST=DIR/manifest.json)")
    exists = name in read_manifest().get("models", {})
    if exists and not overwrite:
        raise OutputError(f"model {name!r} exists in {MANIFEST_PATH}; pass --overwrite to "
                          "replace it, or choose another --name")


def train_command(checkpoint: Path) -> str:
    """The ``edgefer train`` command recorded in the run folder, if any."""
    recorded = checkpoint.parent / "command.txt"
    return recorded.read_text().strip() if recorded.is_file() else ""


def run_export(args: argparse.Namespace) -> int:
    from edgefer.training import export

    if len(args.recipes) != len(args.checkpoints):
        raise InputError(f"{len(args.checkpoints)} checkpoints need {len(args.checkpoints)} "
                         f"recipe files (--recipe), in the same order; got {len(args.recipes)}")
    check_model_name(args.name, args.overwrite)
    console = make_console()
    with console.status("exporting, checking parity and calibrating"):
        report = export.export_checkpoint(args.checkpoints, args.name, args.val, args.val_glob,
                                          tta=args.tta, ferplus_csv=args.ferplus_labels,
                                          weights=args.weights, recipe_files=args.recipes)
        entry = export.manifest_entry(report, args.recipes, args.val, args.val_glob,
                                      command_line(),
                                      [train_command(path) for path in args.checkpoints],
                                      args.license or export.UNSTATED_LICENSE)
        update_manifest(args.name, entry, make_default=args.default)
    console.print(f"wrote {report.onnx_path} ({report.size_bytes / 1e6:.1f} MB, "
                  f"{report.parameters:,} parameters) and {report.weights_path}")
    console.print(f"ONNX vs PyTorch: max |dp| = {report.parity_max_abs_diff:.2e} on "
                  f"{report.parity_images} images; validation accuracy {report.val_accuracy:.4f}")
    console.print(f"temperature {report.temperature:.3f}: validation ECE "
                  f"{report.val_ece_before:.4f} -> {report.val_ece_after:.4f}")
    return 0
