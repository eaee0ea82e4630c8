"""Training loop for the emotion CNN (CPU-friendly; needs the ``torch`` extra).

The whole training set lives in memory as one uint8 tensor (FER2013 is 66 MB) and augmentation
runs batched on tensors, so no data-loader workers compete with the two compute threads; on a
CUDA GPU (``device="cuda"``) the tensors live on the GPU and the same code runs there. Random
draws always come from one CPU generator, so a run draws the same batches and augmentations on
either device and resumes on the other.
Every epoch writes ``last.pt`` (enough to resume bit-for-bit: weights, EMA, optimizer, RNG) and,
when validation accuracy improves, ``best.pt``.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from edgefer.errors import InputError, require
from edgefer.files import atomic_write, to_toml
from edgefer.manifest import CropSpec
from edgefer.training import datasets, metrics
from edgefer.training.recipe import Augment, Recipe
from edgefer.types import EMOTIONS

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainData:
    """Where the images come from; recorded in the checkpoint and the manifest."""

    train_dir: str
    val_dir: str
    train_glob: str = "*"
    val_glob: str = "*"
    ferplus_csv: str | None = None
    crop_cache: str | None = None  # folder for the live-framed crops (recipe.live_framing > 0)
    init_from: str | None = None  # weights a fine-tune starts from (their own provenance applies)
    teachers: tuple[str, ...] = ()  # checkpoints distilled from (recipe.teacher_weight > 0)


@dataclass
class EpochStats:
    epoch: int
    train_loss: float
    train_accuracy: float
    val_loss: float
    val_accuracy: float
    val_macro_f1: float
    lr: float
    seconds: float
    best: bool = False
    val_live_accuracy: float | None = None  # on the live-framed validation crops, when trained on them

    @property
    def selection_accuracy(self) -> float:
        """What chooses ``best.pt``: the mean over the framings the model was trained for."""
        if self.val_live_accuracy is None:
            return self.val_accuracy
        return (self.val_accuracy + self.val_live_accuracy) / 2

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class TrainObserver(Protocol):
    """Receives progress; the CLI renders it with rich, tests may ignore it. Every method is
    called (``preparing`` where the recipe frames faces as the live path does)."""

    def preparing(self, what: str, done: int, total: int) -> None:
        """Data preparation that takes minutes: a folder framed as the live path frames
        faces, the first time a recipe asks for it (cached afterwards)."""

    def epoch_started(self, epoch: int, epochs: int, steps: int) -> None: ...

    def step_done(self, loss: float, lr: float) -> None: ...

    def epoch_done(self, stats: EpochStats) -> None: ...


class SilentObserver:
    def preparing(self, what: str, done: int, total: int) -> None:
        pass

    def epoch_started(self, epoch: int, epochs: int, steps: int) -> None:
        pass

    def step_done(self, loss: float, lr: float) -> None:
        pass

    def epoch_done(self, stats: EpochStats) -> None:
        log.info("epoch %d: %s", stats.epoch, stats.to_dict())


@dataclass
class Split:
    pixels: Any  # torch uint8 (N, H, W)
    labels: Any  # torch int64 (N,)
    targets: Any  # torch float32 (N, 7): smoothed one-hot, optionally blended with FER+ votes
    live_pixels: Any = None  # torch uint8 (N, H, W): live-framed crops (original where none found)
    live_found: Any = None  # torch bool (N,)
    teacher: Any = None  # torch float32 (N, 7): the teachers' probabilities, original framing
    live_teacher: Any = None  # the same for the live framing

    def to(self, device: str) -> Split:
        """The same split with every tensor on ``device``."""
        values = (getattr(self, item.name) for item in dataclasses.fields(self))
        return Split(*(None if value is None else value.to(device) for value in values))


@dataclass
class RunState:
    model: Any
    ema: Any
    optimizer: Any
    epoch: int = 0
    best_accuracy: float = -1.0
    history: list[dict[str, Any]] = field(default_factory=list)

    def to(self, device: str) -> None:
        """Move both networks and the optimizer's momentum to ``device``."""
        self.model.to(device)
        self.ema.to(device)
        for values in self.optimizer.state.values():
            for key, value in values.items():
                if hasattr(value, "to"):
                    values[key] = value.to(device)

    @property
    def device(self) -> Any:
        return next(self.model.parameters()).device


def train(recipe: Recipe, data: TrainData, out_dir: str | Path, resume: bool = False,
          observer: TrainObserver | None = None, device: str = "cpu",
          command: str | None = None) -> list[EpochStats]:
    """Train ``recipe`` on ``data``, writing checkpoints into ``out_dir``; return this call's epochs.

    ``device`` is "cpu", "cuda" or "auto" (CUDA when PyTorch sees a GPU): where the tensors and
    the network live. It is not part of the recipe: a run may resume on the other device.
    ``command``, the command line, is kept in ``command.txt`` once the run is accepted and has
    epochs to train (a refused or idle command trained nothing: the manifest cites this file).
    """
    torch = require("torch", "torch")
    device = resolve_device(device)
    observer = observer or SilentObserver()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(recipe.threads)
    train_split, val_split = load_splits(recipe, data, observer)
    check_trainable(train_split, recipe, data.train_dir)
    if recipe.teacher_weight > 0:
        add_teacher_targets(train_split, recipe, data.teachers)
    train_split, val_split = train_split.to(device), val_split.to(device)
    state = new_state(recipe)
    if data.init_from and not resume:
        load_initial_weights(state, Path(data.init_from), recipe)
    if resume:
        restore(state, out, recipe)
        if recipe.epochs < state.epoch:  # recipe.toml would say fewer epochs than were run
            raise InputError(f"--epochs {recipe.epochs}: {out} has already done {state.epoch} "
                             "epochs; a run is continued, never shortened")
    else:
        (out / "history.jsonl").unlink(missing_ok=True)  # --overwrite: a new run's history
    # what the run continues with, an --epochs that extends it included, for the next --resume
    text = to_toml(recipe.to_dict()).encode()
    atomic_write(out / "recipe.toml", lambda handle: handle.write(text))
    if recipe.epochs < recipe.warmup_epochs:
        log.warning("%d epochs end within the %d-epoch warm-up: the learning rate never reaches "
                    "its peak (set warmup_epochs in the recipe)", recipe.epochs,
                    recipe.warmup_epochs)
    if state.epoch >= recipe.epochs:
        log.warning("nothing to train: %s has done its %d epochs; --epochs N (more) trains "
                    "further", out, recipe.epochs)
    elif command is not None:
        with (out / "command.txt").open("a" if resume else "w") as record:
            record.write(command + "\n")
    state.to(device)
    class_weight = class_weights(train_split.labels, recipe.class_weights)
    done: list[EpochStats] = []
    while state.epoch < recipe.epochs:
        stats = run_epoch(state, recipe, train_split, val_split, class_weight, observer)
        save_checkpoint(state, recipe, data, out, stats)
        observer.epoch_done(stats)
        done.append(stats)
    return done


def resolve_device(name: str) -> str:
    """``name`` checked against what this PyTorch build can run ("auto": CUDA when available)."""
    torch = require("torch", "torch")
    if name not in ("auto", "cpu", "cuda"):
        raise InputError(f"device must be auto, cpu or cuda, got {name!r}")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    elif name == "cuda" and not torch.cuda.is_available():
        raise InputError(f"--device cuda: PyTorch {torch.__version__} sees no CUDA GPU "
                         "(a CPU build of torch, or no driver); use --device cpu")
    if name == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed 48x48 batches: pick the fastest kernels once
    return name


def load_splits(recipe: Recipe, data: TrainData,
                observer: TrainObserver | None = None) -> tuple[Split, Split]:
    if recipe.target_labels == "ferplus" and not data.ferplus_csv:
        raise InputError("this recipe learns FER+ labels (target_labels = \"ferplus\"): "
                         "pass the FER+ votes with --ferplus ferplus_labels.csv")
    votes = datasets.read_ferplus_votes(data.ferplus_csv) if data.ferplus_csv else {}
    majority = datasets.ferplus_majority(data.ferplus_csv) \
        if recipe.target_labels == "ferplus" and data.ferplus_csv else None
    train = load_split(data.train_dir, data.train_glob, recipe, votes, majority, data.crop_cache,
                       observer)
    val = load_split(data.val_dir, data.val_glob, recipe, votes, majority, data.crop_cache,
                     observer)
    log.info("train %d images, validation %d images", len(train.labels), len(val.labels))
    return train, val


def check_trainable(split: Split, recipe: Recipe, where: str) -> None:
    """Refuse a training set without one whole batch (every batch is whole: BatchNorm); warn
    of a class it lacks, which the network would never predict."""
    if len(split.labels) < recipe.batch_size:
        raise InputError(f"{len(split.labels)} training images are fewer than one batch "
                         f"(batch_size {recipe.batch_size}); lower batch_size in the recipe")
    missing = [e for i, e in enumerate(EMOTIONS) if not (split.labels == i).any()]
    if missing:
        log.warning("no training images of %s in %s: the network will never predict %s",
                    ", ".join(missing), where, "it" if len(missing) == 1 else "them")


def load_split(root: str, glob: str, recipe: Recipe, votes: dict[str, np.ndarray],
               majority: dict[str, str] | None, crop_cache: str | None,
               observer: TrainObserver | None = None) -> Split:
    """One image folder as a ``Split``: pixels, labels, targets and, when the recipe trains on
    the live framing, the live-framed crops (``majority`` relabels to the FER+ majority;
    ``observer`` hears of a first framing, which takes minutes)."""
    torch = require("torch", "torch")
    scanned = datasets.scan_image_folder(root, glob)
    folder = scanned
    if majority is not None:
        folder, dropped = datasets.relabel_ferplus(scanned, majority)
        log.info("%s: %d images without a 7-class FER+ majority left out", root, dropped)
    size = (recipe.input_size, recipe.input_size)
    pixels = datasets.load_pixels(folder, size)
    targets = soft_targets(folder, votes, recipe)
    split = Split(torch.from_numpy(pixels), torch.from_numpy(folder.labels),
                  torch.from_numpy(targets))
    if recipe.live_framing > 0:
        from edgefer.training.live_crops import gray_spec, live_framed_pixels

        # Computed (and cached) for the whole folder, so label subsets share one cache.
        framing = CropSpec(roll_tolerance=recipe.live_roll_tolerance)
        progress = functools.partial(observer.preparing, f"live framing {root}") \
            if observer is not None else None
        live, found = live_framed_pixels(scanned, gray_spec(recipe.input_size, framing),
                                         crop_cache or default_crop_cache(), progress=progress)
        row = {path: i for i, path in enumerate(scanned.paths)}
        rows = np.array([row[path] for path in folder.paths])
        split.live_pixels = torch.from_numpy(live[rows])
        split.live_found = torch.from_numpy(found[rows])
    return split


def default_crop_cache() -> str:
    return str(Path.home() / ".cache" / "edgefer" / "crops")


def soft_targets(folder: datasets.ImageFolder, votes: dict[str, np.ndarray],
                 recipe: Recipe) -> np.ndarray:
    """Label-smoothed one-hot targets, blended with FER+ vote shares where votes exist."""
    classes = len(EMOTIONS)
    eps = recipe.label_smoothing
    targets = np.full((len(folder), classes), eps / classes, dtype=np.float32)
    targets[np.arange(len(folder)), folder.labels] += 1.0 - eps
    if votes and recipe.ferplus_weight > 0:
        for row, path in enumerate(folder.paths):
            counts = votes.get(datasets.image_key(path))
            if counts is not None:
                share = counts / counts.sum()
                targets[row] = (1 - recipe.ferplus_weight) * targets[row] + recipe.ferplus_weight * share
    return targets


def class_weights(labels: Any, scheme: str) -> Any:
    """Per-class loss weights, normalized so the average training sample weighs 1."""
    torch = require("torch", "torch")
    counts = torch.bincount(labels, minlength=len(EMOTIONS)).clamp(min=1).float()
    power = {"none": 0.0, "sqrt_inverse": 0.5, "inverse": 1.0}[scheme]
    weights = counts.pow(-power)
    return weights / (weights[labels].mean())


def new_state(recipe: Recipe) -> RunState:
    torch = require("torch", "torch")
    from edgefer import models

    torch.manual_seed(recipe.seed)
    model = models.build(recipe.arch, in_channels=1, input_size=recipe.input_size)
    model = model.to(memory_format=torch.channels_last)
    ema = models.build(recipe.arch, in_channels=1, input_size=recipe.input_size)
    ema.load_state_dict(model.state_dict())
    ema = ema.to(memory_format=torch.channels_last).eval()
    decay, no_decay = [], []
    for _name, param in model.named_parameters():
        (no_decay if param.ndim <= 1 else decay).append(param)
    optimizer = torch.optim.SGD(
        [{"params": decay, "weight_decay": recipe.weight_decay},
         {"params": no_decay, "weight_decay": 0.0}],
        lr=recipe.lr, momentum=recipe.momentum, nesterov=True)
    return RunState(model, ema, optimizer)


@functools.cache
def native_bf16(device_type: str = "cpu") -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX), or this GPU does
    (Ampere and later). Elsewhere autocast emulates it many times slower than float32, so
    recipes' ``bf16`` is ignored there."""
    torch = require("torch", "torch")
    if device_type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    native = any(getattr(torch.cpu, name, lambda: False)() for name in checks)
    if not native:
        log.info("this CPU has no native bfloat16: training in float32")
    return native


def load_initial_weights(state: RunState, path: Path, recipe: Recipe) -> None:
    """Start a fine-tune from a checkpoint or shipped ``.pt`` of the same architecture, or of a
    narrower one of the same layout, widened so that the run starts from its function. A
    ``last.pt`` starts from its weight average."""
    from edgefer.backends.torch import load_checkpoint, network
    from edgefer.training import widen

    if not path.is_file():
        raise InputError(f"initial weights not found: {path}")
    source, saved = load_checkpoint(path)
    if "members" in saved:
        raise InputError(f"{path} is an ensemble of {len(saved['members'])} networks: "
                         "fine-tune from one of their checkpoints")
    if "ema" in saved:
        source = network(saved, "ema")
    own = Recipe.from_dict(saved["recipe"])
    if own.arch == recipe.arch:
        state.model.load_state_dict(source.state_dict())
        log.info("fine-tuning from %s", path)
    elif own.input_size == recipe.input_size and widen.can_widen(source, state.model):
        widen.widen_into(source, state.model, seed=recipe.seed)
        log.info("starting from %s widened from %s to %s", path, own.arch, recipe.arch)
    else:
        raise InputError(f"{path} holds a {own.arch!r} model, which cannot start this "
                         f"recipe's {recipe.arch!r}: same layout, as wide or narrower, needed")
    state.ema.load_state_dict(state.model.state_dict())


def learning_rate(recipe: Recipe, step: int, steps_per_epoch: int) -> float:
    """Linear warm-up, then cosine decay to zero; a pure function of the step, so resume is exact."""
    warmup = recipe.warmup_epochs * steps_per_epoch
    total = recipe.epochs * steps_per_epoch
    if step < warmup:
        return recipe.lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return recipe.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def run_epoch(state: RunState, recipe: Recipe, train_split: Split, val_split: Split,
              class_weight: Any, observer: TrainObserver) -> EpochStats:
    torch = require("torch", "torch")
    start = time.perf_counter()
    # Per-epoch seeds for augmentation and (through the global generator) dropout make a
    # resumed run identical to an uninterrupted one.
    generator = torch.Generator().manual_seed(recipe.seed * 1000 + state.epoch)
    torch.manual_seed(recipe.seed * 1000 + state.epoch)
    order = torch.randperm(len(train_split.labels), generator=generator).to(state.device)
    steps = len(order) // recipe.batch_size  # drop the ragged last batch: BatchNorm dislikes tiny ones
    observer.epoch_started(state.epoch + 1, recipe.epochs, steps)
    state.model.train()
    total_loss, correct, seen = 0.0, 0, 0
    for step in range(steps):
        lr = learning_rate(recipe, state.epoch * steps + step, steps)
        batch = order[step * recipe.batch_size:(step + 1) * recipe.batch_size]
        loss, hits = train_step(state, recipe, train_split, batch, class_weight, lr, generator)
        total_loss += loss * len(batch)
        correct += hits
        seen += len(batch)
        observer.step_done(loss, lr)
    state.epoch += 1
    val_loss, val_probs = predict_split(state.ema, val_split, recipe)
    val_pred = val_probs.argmax(1)
    val_labels = val_split.labels.cpu().numpy()
    live_accuracy = None
    if val_split.live_pixels is not None:
        _, live_probs = predict_split(state.ema, val_split, recipe, pixels=val_split.live_pixels)
        live_accuracy = metrics.accuracy(val_labels, live_probs.argmax(1))
    stats = EpochStats(
        epoch=state.epoch, train_loss=total_loss / seen, train_accuracy=correct / seen,
        val_loss=val_loss, val_accuracy=metrics.accuracy(val_labels, val_pred),
        val_macro_f1=metrics.precision_recall_f1(val_labels, val_pred)["macro_f1"],
        lr=lr, seconds=time.perf_counter() - start, val_live_accuracy=live_accuracy)
    stats.best = stats.selection_accuracy > state.best_accuracy
    state.best_accuracy = max(state.best_accuracy, stats.selection_accuracy)
    state.history.append(stats.to_dict())
    return stats


def train_step(state: RunState, recipe: Recipe, split: Split, batch: Any, class_weight: Any,
               lr: float, generator: Any) -> tuple[float, int]:
    torch = require("torch", "torch")
    for group in state.optimizer.param_groups:
        group["lr"] = lr
    pixels, live = training_pixels(split, batch, recipe.live_framing, generator)
    images = pixels.unsqueeze(1).float().div_(255.0)
    images = augment(images, recipe.augment, generator)
    images = degrade(images, recipe.augment, generator)
    inputs = ((images - recipe.mean) / recipe.std).contiguous(memory_format=torch.channels_last)
    inputs = random_erase(inputs, recipe.augment, generator)
    labels = split.labels[batch]
    targets = batch_targets(split, batch, live, recipe.teacher_weight)
    weights = class_weight[labels]
    state.optimizer.zero_grad(set_to_none=True)
    logits, loss = weighted_loss(state, recipe, inputs, targets, weights)
    loss.backward()
    if recipe.sam_rho > 0:
        sharpness_aware_gradient(state, recipe.sam_rho,
                                 lambda: weighted_loss(state, recipe, inputs, targets, weights)[1])
    state.optimizer.step()
    update_ema(state.ema, state.model, recipe.ema_decay)
    return float(loss.detach()), int((logits.argmax(1) == labels).sum())


def weighted_loss(state: RunState, recipe: Recipe, inputs: Any, targets: Any, weights: Any
                  ) -> tuple[Any, Any]:
    """The model's logits and its class-weighted cross-entropy against soft targets."""
    torch = require("torch", "torch")
    device_type = state.device.type
    with torch.autocast(device_type, dtype=torch.bfloat16,
                        enabled=recipe.bf16 and native_bf16(device_type)):
        logits = state.model(inputs)
    per_sample = -(targets * torch.log_softmax(logits.float(), dim=1)).sum(1)
    return logits, (per_sample * weights).mean()


def sharpness_aware_gradient(state: RunState, rho: float, loss: Callable[[], Any]) -> None:
    """Replace the gradient in the parameters by the one taken at the weights a step of length
    ``rho`` up that gradient (SAM): minimizing it prefers flat minima, which generalize better
    than sharp ones of the same training loss. The second pass runs in training mode, so batch
    norm's running statistics see it too (as in the session-14 runs the model card reports)."""
    torch = require("torch", "torch")
    params = [p for p in state.model.parameters() if p.grad is not None]
    norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params]))
    with torch.no_grad():
        start = [p.detach().clone() for p in params]
        for param in params:
            param.add_(param.grad, alpha=float(rho / (norm + 1e-12)))
    state.optimizer.zero_grad(set_to_none=True)
    loss().backward()
    with torch.no_grad():
        for param, weights in zip(params, start, strict=True):
            param.copy_(weights)  # exactly, not by subtracting the step again


def training_pixels(split: Split, batch: Any, live_framing: float, generator: Any
                    ) -> tuple[Any, Any]:
    """The batch's uint8 pixels, each image in its live framing with probability ``live_framing``
    (where a live crop exists), and which images are."""
    torch = require("torch", "torch")
    pixels = split.pixels[batch]
    if split.live_pixels is None or live_framing <= 0:
        return pixels, torch.zeros(len(batch), dtype=torch.bool, device=pixels.device)
    chosen = (draws(len(batch), generator, pixels.device) < live_framing) & split.live_found[batch]
    return torch.where(chosen.view(-1, 1, 1), split.live_pixels[batch], pixels), chosen


def batch_targets(split: Split, batch: Any, live: Any, teacher_weight: float) -> Any:
    """Label targets, blended with the teachers' probabilities for the framing each image has."""
    torch = require("torch", "torch")
    targets = split.targets[batch]
    if split.teacher is None or teacher_weight <= 0:
        return targets
    teacher = split.teacher[batch]
    if split.live_teacher is not None:
        teacher = torch.where(live.view(-1, 1), split.live_teacher[batch], teacher)
    return (1 - teacher_weight) * targets + teacher_weight * teacher


def add_teacher_targets(split: Split, recipe: Recipe, teachers: tuple[str, ...]) -> None:
    """The teachers' mean flip-averaged probabilities at ``recipe.teacher_temperature``, once per
    image and framing (offline distillation: the student's augmentations are not re-scored)."""
    if not teachers:
        raise InputError("this recipe distils (teacher_weight > 0): name the teacher "
                         "checkpoints with --teacher PT")
    split.teacher = teacher_probs(teachers, split.pixels, recipe)
    if split.live_pixels is not None and recipe.teacher_framing == "same":
        split.live_teacher = teacher_probs(teachers, split.live_pixels, recipe)


def teacher_probs(teachers: tuple[str, ...], pixels: Any, recipe: Recipe) -> Any:
    """The teachers' mean probabilities of ``pixels`` at ``recipe.teacher_temperature``."""
    torch = require("torch", "torch")
    total = sum(torch.softmax(checkpoint_logits(path, pixels, recipe.input_size)
                              / recipe.teacher_temperature, dim=1) for path in teachers)
    return total / len(teachers)


def checkpoint_logits(path: str, pixels: Any, input_size: int, weights: str = "model",
                      mirror: bool = True, batch_size: int = 512) -> Any:
    """A checkpoint's logits for ``pixels`` (torch uint8 ``(N, H, W)``), averaged with the mirror
    image's as ``--tta flip`` exports them unless ``mirror`` is False; ``weights`` as in
    ``load_checkpoint``."""
    torch = require("torch", "torch")
    from edgefer.backends.torch import load_checkpoint
    from edgefer.models import with_flip_average

    module, saved = load_checkpoint(Path(path), weights)
    module = (with_flip_average(module) if mirror else module).eval()
    own = Recipe.from_dict(saved["recipe"])
    if own.input_size != input_size:
        raise InputError(f"{path} takes {own.input_size}px faces, not {input_size}px")
    logits = torch.zeros(len(pixels), len(EMOTIONS))
    with torch.no_grad():
        for start in range(0, len(pixels), batch_size):
            images = pixels[start:start + batch_size].unsqueeze(1).float() / 255.0
            logits[start:start + batch_size] = module((images - own.mean) / own.std).float()
    log.info("%s scored %d images", path, len(pixels))
    return logits


def draws(n: int, generator: Any, device: Any) -> Any:
    """``n`` uniform draws in [0, 1) from the CPU ``generator``, placed on ``device``."""
    torch = require("torch", "torch")
    return torch.rand(n, generator=generator).to(device)


def degrade(images: Any, cfg: Augment, generator: Any) -> Any:
    """Low resolution, exposure (gamma) and sensor noise, on ``(N, 1, H, W)`` images in 0-1."""
    torch = require("torch", "torch")
    functional = require("torch.nn.functional", "torch")
    n, _, height, width = images.shape
    if cfg.gamma > 0:
        gamma = torch.exp((draws(n, generator, images.device) * 2 - 1) * cfg.gamma)
        images = images.clamp(min=1e-4).pow(gamma.view(n, 1, 1, 1))
    if cfg.blur_prob > 0:
        side = int(torch.randint(cfg.blur_min_side, height, (1,), generator=generator))
        small = functional.interpolate(images, size=(side, side * width // height), mode="area")
        blurred = functional.interpolate(small, size=(height, width), mode="bilinear",
                                         align_corners=False)
        chosen = (draws(n, generator, images.device) < cfg.blur_prob).view(n, 1, 1, 1)
        images = torch.where(chosen, blurred, images)
    if cfg.noise_std > 0:
        std = draws(n, generator, images.device).view(n, 1, 1, 1) * cfg.noise_std
        images = images + torch.randn(images.shape, generator=generator).to(images.device) * std
    return images.clamp(0.0, 1.0)


def augment(images: Any, cfg: Augment, generator: Any) -> Any:
    """Random rotation, scale, shift and mirror (one affine warp), then brightness and contrast."""
    torch = require("torch", "torch")
    functional = require("torch.nn.functional", "torch")
    n = images.shape[0]

    def uniform(magnitude: float) -> Any:
        return (draws(n, generator, images.device) * 2 - 1) * magnitude

    angle = uniform(math.radians(cfg.rotate_deg))
    zoom = 1.0 / (1.0 + uniform(cfg.scale))
    mirror = torch.where(draws(n, generator, images.device) < 0.5, -1.0, 1.0) if cfg.hflip \
        else torch.ones(n, device=images.device)
    cos, sin = torch.cos(angle) * zoom, torch.sin(angle) * zoom
    theta = torch.stack([
        torch.stack([cos * mirror, -sin, uniform(2 * cfg.shift)], 1),
        torch.stack([sin * mirror, cos, uniform(2 * cfg.shift)], 1),
    ], 1)
    grid = functional.affine_grid(theta, list(images.shape), align_corners=False)
    warped = functional.grid_sample(images, grid, mode="bilinear", padding_mode="reflection",
                                    align_corners=False)
    mean = warped.mean(dim=(1, 2, 3), keepdim=True)
    contrast = (1 + uniform(cfg.contrast)).view(n, 1, 1, 1)
    brightness = uniform(cfg.brightness).view(n, 1, 1, 1)
    return ((warped - mean) * contrast + mean + brightness).clamp_(0.0, 1.0)


def random_erase(inputs: Any, cfg: Augment, generator: Any) -> Any:
    """Blank one random rectangle per selected image (an occluding hand, hair, glasses)."""
    torch = require("torch", "torch")
    n, _, height, width = inputs.shape

    def draw(low: float, high: float) -> Any:
        return low + draws(n, generator, inputs.device) * (high - low)

    area = draw(*cfg.erase_area) * height * width
    aspect = torch.exp(draw(math.log(0.3), math.log(3.3)))
    box_h = (area * aspect).sqrt().clamp(max=height)
    box_w = (area / aspect).sqrt().clamp(max=width)
    top = draw(0, 1) * (height - box_h)
    left = draw(0, 1) * (width - box_w)
    rows = torch.arange(height, device=inputs.device).view(1, height, 1)
    cols = torch.arange(width, device=inputs.device).view(1, 1, width)
    inside = ((rows >= top.view(n, 1, 1)) & (rows < (top + box_h).view(n, 1, 1))
              & (cols >= left.view(n, 1, 1)) & (cols < (left + box_w).view(n, 1, 1)))
    chosen = (draws(n, generator, inputs.device) < cfg.erase_prob).view(n, 1, 1)
    return inputs.masked_fill((inside & chosen).unsqueeze(1), 0.0)


def update_ema(ema: Any, model: Any, decay: float) -> None:
    torch = require("torch", "torch")
    with torch.no_grad():
        for target, source in zip(ema.state_dict().values(), model.state_dict().values(), strict=False):
            if target.dtype.is_floating_point:
                target.mul_(decay).add_(source, alpha=1 - decay)
            else:
                target.copy_(source)


def predict_split(model: Any, split: Split, recipe: Recipe, batch_size: int = 512,
                  pixels: Any = None) -> tuple[float, np.ndarray]:
    """Mean cross-entropy against hard labels and the softmax probabilities, in fp32
    (of ``pixels`` when given, else of the split's own)."""
    torch = require("torch", "torch")
    source = split.pixels if pixels is None else pixels
    model.eval()
    losses, probs = [], []
    with torch.no_grad():
        for start in range(0, len(split.labels), batch_size):
            pixels = source[start:start + batch_size].unsqueeze(1).float() / 255.0
            inputs = ((pixels - recipe.mean) / recipe.std).contiguous(memory_format=torch.channels_last)
            logits = model(inputs).float()
            labels = split.labels[start:start + batch_size]
            losses.append(torch.nn.functional.cross_entropy(logits, labels, reduction="sum"))
            probs.append(torch.softmax(logits, 1))
    return float(sum(losses)) / len(split.labels), torch.cat(probs).cpu().numpy()


def save_checkpoint(state: RunState, recipe: Recipe, data: TrainData, out: Path,
                    stats: EpochStats) -> None:
    """Write ``last.pt`` atomically (and ``best.pt`` on improvement) plus a JSON-lines history.
    Tensors are saved on the CPU, so a checkpoint loads anywhere, whichever device trained it."""
    torch = require("torch", "torch")
    payload = {
        "model": on_cpu(state.model.state_dict()), "ema": on_cpu(state.ema.state_dict()),
        "optimizer": on_cpu(state.optimizer.state_dict()), "epoch": state.epoch,
        "best_accuracy": state.best_accuracy, "history": state.history,
        "recipe": recipe.to_dict(), "data": data.__dict__,
    }
    atomic_write(out / "last.pt", lambda handle: torch.save(payload, handle))
    if stats.best:
        best = {"model": payload["ema"], "epoch": state.epoch, "recipe": recipe.to_dict(),
                "data": data.__dict__, "val_accuracy": stats.val_accuracy}
        atomic_write(out / "best.pt", lambda handle: torch.save(best, handle))
    with (out / "history.jsonl").open("a") as handle:
        handle.write(json.dumps(stats.to_dict()) + "\n")


def on_cpu(value: Any) -> Any:
    """``value`` (tensors nested in dicts and lists) with every tensor copied to the CPU."""
    if isinstance(value, dict):
        return {key: on_cpu(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(on_cpu(item) for item in value)
    return value.cpu() if hasattr(value, "cpu") else value


# Recipe keys a resumed run may change: a longer schedule, or the machine's thread count.
RESUMABLE_CHANGES = {"epochs", "threads"}


def checkpoint_to_resume(out: Path) -> Path:
    """``out/last.pt``, or a clear error where the run folder holds none."""
    checkpoint = out / "last.pt"
    if not checkpoint.is_file():
        raise InputError(f"nothing to resume: {checkpoint} does not exist")
    return checkpoint


def restore(state: RunState, out: Path, recipe: Recipe) -> None:
    """Continue the run in ``out`` from its ``last.pt``; the recipe must match the one the run
    started with, except for ``RESUMABLE_CHANGES`` (another machine may have more cores)."""
    torch = require("torch", "torch")
    checkpoint = checkpoint_to_resume(out)
    saved = torch.load(checkpoint, map_location="cpu", weights_only=True)  # tensors, no code
    now = recipe.to_dict()
    fixed = sorted(key for key, value in saved["recipe"].items()
                   if value != now.get(key) and key not in RESUMABLE_CHANGES)
    if fixed:
        raise InputError(f"cannot resume {checkpoint}: recipe differs in {', '.join(fixed)}")
    state.model.load_state_dict(saved["model"])
    state.ema.load_state_dict(saved["ema"])
    state.optimizer.load_state_dict(saved["optimizer"])
    state.epoch = saved["epoch"]
    state.best_accuracy = saved["best_accuracy"]
    state.history = saved["history"]
    log.info("resumed %s at epoch %d", checkpoint, state.epoch)
