"""The LLM comparison's shared parts: asking about every evaluated face crop, and the
held-out and cost tables that ``eval --llm/--cascade`` and ``llm calibrate`` both print."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console

    from edgefer.llm.config import LlmConfig
    from edgefer.training.cascade import LlmAnswers
    from edgefer.training.evaluate import EvalOptions, EvalResult


def ask_llm_about(result: EvalResult, options: EvalOptions, config: LlmConfig,
                  console: Console) -> LlmAnswers:
    """The LLM's answer about every evaluated face crop (cached, budgeted, resumable)."""
    from rich.progress import Progress

    from edgefer.manifest import load_model_entry
    from edgefer.sources import load_gray
    from edgefer.training import cascade

    spec = load_model_entry(options.model, options.manifest).input  # the crops the model saw
    images = [load_gray(p, (spec.height, spec.width)) for p in result.paths]
    queries = cascade.face_queries(images, result.probs, config)
    with Progress(console=console, transient=True, disable=not console.is_terminal) as progress:
        task = progress.add_task("asking the LLM", total=len(queries))
        return cascade.ask_all(queries, config,
                               lambda done, total: progress.update(task, completed=done))


def held_out_markdown(held: dict[str, Any]) -> list[str]:
    """Side by side on the second half; models fitted and shares chosen on the first."""
    replace, learned = held["second_half_replace"], held["second_half_learned"]
    lines = [f"Held-out half (fitted and chosen on the other half, shares up to "
             f"{held['max_share']:.0%}):", "", "| | share sent | accuracy |", "|---|---:|---:|",
             f"| CNN | 0% | {held['second_half_cnn']['accuracy']:.4f} |",
             f"| CNN recalibrated (no LLM) | 0% | "
             f"{held['second_half_cnn_recalibrated']['accuracy']:.4f} |",
             f"| LLM alone | 100% | {held['second_half_llm']['accuracy']:.4f} |",
             f"| replace policy | {replace['share']:.0%} | {replace['accuracy']:.4f} |",
             f"| learned fusion | {learned['sent']:.0%} (cap {learned['share']:.0%}) | "
             f"{learned['accuracy']:.4f} |",
             "", f"Chosen on the first half: {held['chosen_policy_on_first_half']} at "
             f"{held['chosen_share_on_first_half']:.0%}. LLM contribution (learned fusion minus "
             f"recalibrated CNN): {100 * held['llm_contribution']:+.2f} points; learned minus CNN, "
             f"worst share: {100 * held['learned_minus_cnn_min_over_shares']:+.2f} points.",
             *repeated_splits_line(held.get("repeated_splits")),
             *all_faces_line(held.get("all_faces_out_of_fold")), "",
             "| share sent (learned: at most) | replace | learned | LLM contribution |",
             "|---:|---:|---:|---:|"]
    lines += [f"| {row['share_sent']:.0%} | {row['replace']:.4f} | {row['learned']:.4f} | "
              f"{100 * row['llm_contribution']:+.2f} |" for row in held["curve"]]
    return lines


def repeated_splits_line(spread: dict[str, Any] | None) -> list[str]:
    if not spread or spread["splits"] < 2:
        return []
    low, high = spread["llm_contribution_range"]
    return [f"Over {spread['splits']} different halves: LLM contribution "
            f"{100 * spread['llm_contribution_mean']:+.2f} ± "
            f"{100 * spread['llm_contribution_standard_error']:.2f} points (mean ± standard "
            f"error; from {100 * low:+.2f} to {100 * high:+.2f}), {spread['sent_mean']:.0%} of "
            f"faces sent; learned minus CNN {100 * spread['learned_minus_cnn_mean']:+.2f} on "
            f"average, {100 * spread['learned_minus_cnn_min']:+.2f} at worst."]


def all_faces_line(ceiling: dict[str, Any] | None) -> list[str]:
    if not ceiling:
        return []
    return [f"Every face asked and fused, out of fold ({ceiling['folds']} folds x "
            f"{ceiling['repeats']}): {ceiling['fused_accuracy']:.4f} vs the recalibrated CNN "
            f"{ceiling['recalibrated_accuracy']:.4f}: the answers hold "
            f"{100 * ceiling['gain']:+.2f} ± {100 * ceiling['gain_standard_error']:.2f} points "
            "(± one standard error over the faces) beyond the CNN under these labels."]


def cost_line(cost: dict[str, Any]) -> str:
    prompt, completion = cost["tokens_per_face"]
    return (f"Cost ({cost['model']}, USD {cost['price_per_million'][0]:g}/{cost['price_per_million'][1]:g}"
            f" per million tokens): {prompt:.0f} prompt + {completion:.0f} completion tokens per "
            f"face asked = ${cost['usd_per_face']:.6f}; at {cost['share_sent']:.0%} sent and one "
            f"question per 5 s cooldown, ${cost['usd_per_hour_one_face']:.4f} per hour of video "
            "per face in view.")
