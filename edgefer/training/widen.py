"""Start a wider network from a trained narrower one without changing what it computes.

Net2WiderNet (Chen, Goodfellow and Shlens, 2016): each added unit copies an existing one (its
incoming weights and BatchNorm statistics), and every copy's outgoing weights carry a share of
the original's, the shares summing to one, so the wider network's logits equal the narrower's.
Training then has room to grow without repeating the narrow network's full schedule, which is
what makes a larger student trainable in a session on a 2-core CPU. Unequal shares and a little
noise on the copies' incoming weights make the copies receive different gradients, so they drift
apart instead of staying twins.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from edgefer.errors import InputError, require

if TYPE_CHECKING:
    from torch import nn

_CARRIED = ("Conv2d", "BatchNorm2d", "Linear", "ReLU", "MaxPool2d", "Flatten", "Dropout")


def can_widen(source: nn.Module, target: nn.Module) -> bool:
    """Whether ``target`` is ``source`` with as many or more units in every layer and the same
    outputs (a VGG of this registry, a stack of the layers below)."""
    old_layers, new_layers = list(source.children()), list(target.children())
    if len(old_layers) != len(new_layers):
        return False
    units = []  # (old, new) output units of each weighted layer
    for old, new in zip(old_layers, new_layers, strict=True):
        kind = type(old).__name__
        if type(new) is not type(old) or kind not in _CARRIED:
            return False
        if kind in ("Conv2d", "Linear"):
            if old.weight.shape[2:] != new.weight.shape[2:]:
                return False
            units.append((old.weight.shape[0], new.weight.shape[0]))
    return bool(units) and all(o <= n for o, n in units) and units[-1][0] == units[-1][1]


def widen_into(source: nn.Module, target: nn.Module, noise: float = 0.01, seed: int = 0) -> None:
    """Load ``target``'s weights so that it computes ``source``'s function.

    ``noise`` is the standard deviation, relative to each layer's, of the perturbation added to
    the copies' incoming weights (0 keeps the function exact).
    """
    torch = require("torch", "torch")
    if not can_widen(source, target):
        raise InputError("cannot widen: the two networks differ in more than their widths")
    generator = torch.Generator().manual_seed(seed)
    origin = shares = None  # for the last widened layer's units: which source unit, what share
    with torch.no_grad():
        for old, new in zip(source.children(), target.children(), strict=True):
            kind = type(old).__name__
            if kind == "BatchNorm2d":
                _copy_units(old, new, origin)
            elif kind in ("Conv2d", "Linear"):
                inputs = new.weight.shape[1]
                if origin is not None and len(origin) != inputs:  # after Flatten
                    origin, shares = _spread_over_pixels(origin, shares, inputs)
                origin, shares = _widen_weight(old, new, origin, shares, noise, generator)


def _widen_weight(old: Any, new: Any, origin: Any, shares: Any, noise: float,
                  generator: Any) -> tuple[Any, Any]:
    """Copy a conv or linear layer: its inputs follow the previous layer's copies (each weighted
    by its share), its outputs are the originals followed by copies; returns the outputs' map."""
    torch = require("torch", "torch")
    weight = old.weight
    if origin is not None:
        view = (1, -1) + (1,) * (weight.dim() - 2)
        weight = weight[:, origin] * shares.view(view)
    out_origin = _replicas(weight.shape[0], new.weight.shape[0], generator)
    weight = weight[out_origin].clone()
    added = slice(old.weight.shape[0], None)
    weight[added] += noise * old.weight.std() * torch.randn(weight[added].shape, generator=generator)
    new.weight.copy_(weight)
    if old.bias is not None:
        new.bias.copy_(old.bias[out_origin])
    return out_origin, _split_shares(out_origin, old.weight.shape[0], generator)


def _copy_units(old: Any, new: Any, origin: Any) -> None:
    """A BatchNorm layer's per-channel parameters and statistics, following the channels' copies."""
    for name in ("weight", "bias", "running_mean", "running_var"):
        getattr(new, name).copy_(getattr(old, name)[origin])
    new.num_batches_tracked.copy_(old.num_batches_tracked)


def _spread_over_pixels(origin: Any, shares: Any, features: int) -> tuple[Any, Any]:
    """The channel map as a map of flattened ``(C, H, W)`` features, for the first linear layer."""
    torch = require("torch", "torch")
    pixels = features // len(origin)
    feature_origin = (origin.view(-1, 1) * pixels + torch.arange(pixels)).flatten()
    return feature_origin, shares.repeat_interleave(pixels)


def _replicas(old: int, new: int, generator: Any) -> Any:
    """Which original unit each of ``new`` units copies: the originals, then random ones."""
    torch = require("torch", "torch")
    extra = new - old
    picks = (torch.randperm(old, generator=generator)[:extra] if extra <= old
             else torch.randint(old, (extra,), generator=generator))
    return torch.cat([torch.arange(old), picks])


def _split_shares(origin: Any, old: int, generator: Any) -> Any:
    """Random positive shares per unit that sum to one over each original's copies."""
    torch = require("torch", "torch")
    raw = torch.empty(len(origin)).uniform_(0.5, 1.5, generator=generator)
    totals = torch.zeros(old).index_add_(0, origin, raw)
    return raw / totals[origin]
