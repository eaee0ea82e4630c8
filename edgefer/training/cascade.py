"""The CNN-vs-LLM experiment and the learned policy's fitting.

The LLM is asked once about every evaluated face; every policy at every share of faces sent is
then computed offline from the same answers. Because these are test images, the learned models
are fitted and every operating point is chosen on one half of the faces (stratified by class,
fixed seed), and the figures that matter are reported on the other half, side by side: the CNN,
the CNN recalibrated on the fitting half (no LLM), the LLM alone, the replace-policy cascade
(least confident faces take the LLM's label) and the learned fusion (faces routed by expected
benefit, answers fused). The LLM's contribution is the learned fusion minus the recalibrated CNN:
the recalibration alone moves the CNN into the label space of the ground truth (FER+ annotators
call more faces neutral than FER2013's), which is not the LLM's doing. The whole comparison is
repeated over several halves, because on a few thousand faces one split's figure is noisy.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgefer.classify import softmax
from edgefer.images import encode_jpeg
from edgefer.llm.cache import AnswerCache, cache_key
from edgefer.llm.client import LlmClient, LlmStats
from edgefer.llm.config import LlmConfig
from edgefer.llm.constants import CROP_SIZE, JPEG_QUALITY
from edgefer.llm.fusion import FusionModel, cnn_features, fused_features
from edgefer.llm.parse import Answer
from edgefer.llm.prompt import FaceQuery
from edgefer.training import metrics
from edgefer.types import EMOTIONS

SHARES = tuple(round(x, 2) for x in np.linspace(0.0, 1.0, 21))
ANSWER_PRIOR = 20.0  # pseudo-faces per class pulling the answer table towards "uninformative"
FOLDS = 5  # out-of-fold choice, in fit_fusion, of recalibrating and of asking at all
# out-of-fold one-sided sign tests in fit_fusion: recalibrating changes every face's decision
# and must win at 95%; asking, limited to faces with a positive expected benefit, at 84%
RECALIBRATE_Z = 1.645
ASK_Z = 1.0
SPLITS = 10  # held-out comparisons repeated over this many halves (seeds 0..SPLITS-1)
L2 = 1e-2  # ridge penalty of the fusion models (per sample); small: a few hundred parameters
# live, a face in view is asked at most once per cooldown (5 s): 720 questions per hour
QUESTIONS_PER_HOUR_PER_FACE = 3600 / 5.0


@dataclass
class LlmAnswers:
    labels: np.ndarray  # int label per face, -1 when the LLM gave no usable answer
    probs: np.ndarray  # (n, 7) answer distribution; NaN rows where there is none
    tokens: np.ndarray  # (n, 2) this face's share of its request's prompt/completion tokens
    stats: LlmStats

    @property
    def answered(self) -> np.ndarray:
        return self.labels >= 0

    def subset(self, rows: np.ndarray) -> LlmAnswers:
        return LlmAnswers(self.labels[rows], self.probs[rows], self.tokens[rows], self.stats)


def face_queries(images: list[np.ndarray], probs: np.ndarray, config: LlmConfig
                 ) -> list[FaceQuery]:
    """One query per pre-cropped face: upscaled to the live crop size, JPEG-encoded."""
    import cv2

    queries = []
    for i, image in enumerate(images):
        colour = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR) if image.ndim == 2 else image
        crop = cv2.resize(colour, (CROP_SIZE, CROP_SIZE), interpolation=cv2.INTER_CUBIC)
        jpeg = encode_jpeg(crop, JPEG_QUALITY)
        options = None
        if config.top2:
            best = np.argsort(probs[i])[::-1][:2]
            options = (EMOTIONS[best[0]], EMOTIONS[best[1]])
        queries.append(FaceQuery(f"i{i}", jpeg, cache_key(jpeg, config, options), options))
    return queries


def ask_all(queries: list[FaceQuery], config: LlmConfig,
            progress: Callable[[int, int], None] | None = None, chunk: int = 100) -> LlmAnswers:
    """Ask the LLM about every query (batched, cached, budgeted); answers in order. With a
    cache file, an interrupted run resumes where it stopped (answered faces are not re-asked)."""
    stats = LlmStats()
    cache = AnswerCache(config.cache_path)

    async def run() -> dict[str, Answer | None]:
        client = LlmClient(config, cache, stats)
        answers: dict[str, Answer | None] = {}
        try:
            for start in range(0, len(queries), chunk):
                answers.update(await client.answer(queries[start:start + chunk]))
                if progress:
                    progress(min(start + chunk, len(queries)), len(queries))
        finally:
            await client.close()
        return answers

    try:
        answers = asyncio.run(run())
    finally:
        cache.close()
    return collect(queries, answers, stats)


def collect(queries: list[FaceQuery], answers: dict[str, Answer | None], stats: LlmStats
            ) -> LlmAnswers:
    n = len(queries)
    labels, probs, tokens = np.full(n, -1), np.full((n, len(EMOTIONS)), np.nan), np.zeros((n, 2))
    for i, query in enumerate(queries):
        answer = answers.get(query.face_id)
        if answer is not None:
            labels[i] = EMOTIONS.index(answer.label)
            probs[i] = answer.distribution()
            tokens[i] = answer.prompt_tokens, answer.completion_tokens
    return LlmAnswers(labels, probs, tokens, stats)


# -- the learned policy ----------------------------------------------------------------------
def fit_softmax(features: np.ndarray, y: np.ndarray, prior: np.ndarray, l2: float = L2,
                steps: int = 25) -> np.ndarray:
    """Multinomial logistic regression by Newton's method, shrunk towards ``prior`` (d, classes)
    with a penalty ``l2 * n * |W - prior|^2 / 2``: with little data the fit stays near the prior
    (for the recalibration: the CNN as it is; for the fusion: the CNN, ignoring the LLM), and
    with none (an endpoint that answered no face of this half) it is the prior."""
    n, d = features.shape
    if n == 0:
        return prior.copy()
    classes = prior.shape[1]
    onehot = np.eye(classes)[y]
    penalty = l2 * n

    def loss(weights: np.ndarray) -> float:
        logits = features @ weights
        top = logits.max(1, keepdims=True)
        log_norm = (top + np.log(np.exp(logits - top).sum(1, keepdims=True)))[:, 0]
        data = float(np.sum(log_norm - (logits * onehot).sum(1)))
        return data + penalty / 2 * float(np.sum((weights - prior) ** 2))

    weights, current = prior.copy(), loss(prior)
    for _ in range(steps):
        logits = features @ weights
        probs = softmax(logits)
        gradient = features.T @ (probs - onehot) + penalty * (weights - prior)
        curvature = probs[:, :, None] * (np.eye(classes)[None] - probs[:, None, :])  # (n, K, K)
        weighted = (curvature.reshape(n, -1, 1) * features[:, None, :]).reshape(n, -1)
        # plain einsum, not BLAS: small products, and no thread pool to fight on a busy CPU
        hessian = np.einsum("ia,ib->ab", features, weighted).reshape(d, classes, classes, d)
        hessian = hessian.transpose(1, 0, 2, 3).reshape(classes * d, classes * d) \
            + penalty * np.eye(classes * d)
        step = np.linalg.solve(hessian, gradient.T.reshape(-1)).reshape(classes, d).T
        for _ in range(30):  # backtracking: a full Newton step can overshoot far from the optimum
            candidate = loss(weights - step)
            if candidate <= current:
                break
            step = step / 2
        else:
            break
        weights, improvement, current = weights - step, current - candidate, candidate
        if improvement < 1e-9 * max(1.0, abs(current)):
            break
    return weights


def identity_prior(d: int, classes: int) -> np.ndarray:
    """Weights that reproduce the CNN: logits = log p_cnn (columns 1..classes of the features)."""
    prior = np.zeros((d, classes))
    prior[1:1 + classes] = np.eye(classes)
    return prior


def answer_table(y: np.ndarray, llm: LlmAnswers, classes: int,
                 prior_strength: float = ANSWER_PRIOR) -> tuple[np.ndarray, np.ndarray]:
    """The endpoint's top-answer confusion (true class x answer, last column: no usable answer)
    and its mean answer distribution per top answer. Each row is shrunk towards the answers'
    overall frequencies (``prior_strength`` pseudo-faces): an endpoint whose answers do not
    depend on the true class then shows no benefit anywhere, instead of a sampling-noise one."""
    answers = np.where(llm.answered, llm.labels, classes)
    overall = np.bincount(answers, minlength=classes + 1) + 1.0
    confusion = np.tile(prior_strength * overall / overall.sum(), (classes, 1))
    np.add.at(confusion, (y, answers), 1)
    typical = np.eye(classes)
    for answer in range(classes):
        given = llm.labels == answer
        if given.any():
            typical[answer] = llm.probs[given].mean(0)
    return confusion / confusion.sum(1, keepdims=True), typical


def fit_models(y: np.ndarray, cnn_probs: np.ndarray, llm: LlmAnswers) -> FusionModel:
    """Recalibration, fusion and answer table fitted on these faces (no threshold yet)."""
    classes = cnn_probs.shape[1]
    recal = fit_softmax(cnn_features(cnn_probs), y, identity_prior(1 + classes, classes))
    answered = llm.answered
    features = fused_features(cnn_probs[answered], llm.probs[answered])
    fusion = fit_softmax(features, y[answered], identity_prior(features.shape[1], classes))
    return FusionModel(recal, fusion, *answer_table(y, llm, classes), np.inf)


def fold_splits(n: int, folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(fitting rows, scored rows) per fold: every row scored once, by a fit without it."""
    assignment = np.random.default_rng(seed).permutation(n) % folds
    return [(np.flatnonzero(assignment != fold), np.flatnonzero(assignment == fold))
            for fold in range(folds)]


def fit_fusion(y: np.ndarray, cnn_probs: np.ndarray, llm: LlmAnswers, max_share: float = 1.0,
               provenance: dict[str, Any] | None = None, seed: int = 0) -> FusionModel:
    """Fit the models on these faces, then decide out of fold (each fold scored by models
    fitted on the others) whether to recalibrate the CNN at all and whether to ask at all.
    Each is kept only if it wins a one-sided sign test on the faces whose decision it changes
    (``RECALIBRATE_Z``, ``ASK_Z``): a recalibration, or questions, that help only by sampling noise would
    put the policy below the CNN on new faces as often as above it. So an endpoint that does
    not help under these labels is asked about nothing. How many faces are asked is not chosen
    from a grid of shares (on a few thousand faces that choice fits noise): every face with a
    positive expected benefit is, up to the ``max_share`` cap."""
    model = fit_models(y, cnn_probs, llm)
    cap = max(s for s in SHARES if s <= max_share + 1e-9)
    right = np.zeros((2, 2, len(y)), dtype=bool)  # recalibrated?, asked?, face
    for train, test in fold_splits(len(y), FOLDS, seed):
        fitted = fit_models(y[train], cnn_probs[train], llm.subset(train))
        for recalibrated, part in enumerate((without_recalibration(fitted), fitted)):
            for asked, share in enumerate((0.0, cap)):
                right[recalibrated, asked, test] = learned_predictions(
                    part, cnn_probs[test], llm.subset(test), share) == y[test]
    recalibrate = significantly_better(right[1, 0], right[0, 0], RECALIBRATE_Z)
    ask = significantly_better(right[int(recalibrate), 1], right[int(recalibrate), 0], ASK_Z)
    if not recalibrate:
        model = without_recalibration(model)
    share = cap if ask else 0.0
    sent = len(faces_to_ask(model, cnn_probs, share)) / len(y)
    return dataclasses.replace(model, benefit_threshold=benefit_threshold(model, cnn_probs, share),
                               provenance={**(provenance or {}), "share_cap": share,
                                           "share_sent_on_fitting_data": sent,
                                           "recalibrated": recalibrate})


def significantly_better(candidate: np.ndarray, baseline: np.ndarray, z: float) -> bool:
    """One-sided sign test (normal approximation) on the faces where exactly one is right."""
    wins, losses = int(np.sum(candidate & ~baseline)), int(np.sum(~candidate & baseline))
    return wins - losses > z * np.sqrt(wins + losses)


def without_recalibration(model: FusionModel) -> FusionModel:
    """The same model with the CNN's probabilities taken as they are for unanswered faces."""
    classes = model.recalibration.shape[1]
    return dataclasses.replace(model, recalibration=identity_prior(1 + classes, classes))


def benefit_threshold(model: FusionModel, cnn_probs: np.ndarray, share: float) -> float:
    """The expected-benefit cut that sends at most ``share`` of these faces, and only faces
    with a positive expected benefit (inf for none)."""
    count = round(share * len(cnn_probs))
    if count == 0:
        return float("inf")
    benefits = np.sort(model.expected_benefit(cnn_probs))[::-1]
    return max(float(benefits[count - 1]) - 1e-9, 0.0)


def learned_predictions(model: FusionModel, cnn_probs: np.ndarray, llm: LlmAnswers,
                        share: float) -> np.ndarray:
    """The recalibrated CNN's labels; of the ``share`` of faces with the highest expected
    benefit, those with a positive one (and an answer) take the fused label."""
    predictions = model.recalibrate(cnn_probs).argmax(1)
    chosen = faces_to_ask(model, cnn_probs, share)
    chosen = chosen[llm.answered[chosen]]
    predictions[chosen] = model.fuse(cnn_probs[chosen], llm.probs[chosen]).argmax(1)
    return predictions


def faces_to_ask(model: FusionModel, cnn_probs: np.ndarray, share: float) -> np.ndarray:
    """Rows of the ``share`` of faces with the highest expected benefit, less those whose
    benefit is not positive: the share is a cap, faces no answer can help are not sent."""
    count = round(share * len(cnn_probs))
    if count == 0:
        return np.zeros(0, dtype=int)
    benefit = model.expected_benefit(cnn_probs)
    chosen = np.argsort(-benefit, kind="stable")[:count]
    return chosen[benefit[chosen] > 0]


# -- today's replace policy ------------------------------------------------------------------
def cascade_predictions(cnn_probs: np.ndarray, llm_labels: np.ndarray, share: float) -> np.ndarray:
    """The CNN's labels, with the ``share`` least confident faces replaced by the LLM's answer
    (where it gave one)."""
    predictions = cnn_probs.argmax(1).copy()
    count = round(share * len(predictions))
    if count:
        least_confident = np.argsort(cnn_probs.max(1), kind="stable")[:count]
        answered = least_confident[llm_labels[least_confident] >= 0]
        predictions[answered] = llm_labels[answered]
    return predictions


def split_halves(labels: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two disjoint halves, stratified by class, with a fixed seed."""
    rng = np.random.default_rng(seed)
    first = []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        first.append(members[: len(members) // 2])
    chosen = np.zeros(len(labels), dtype=bool)
    chosen[np.concatenate(first)] = True
    return np.flatnonzero(chosen), np.flatnonzero(~chosen)


def llm_alone(y_true: np.ndarray, llm_labels: np.ndarray) -> dict[str, float]:
    """LLM-only figures; a face without a usable answer counts as wrong."""
    predictions = np.where(llm_labels >= 0, llm_labels, -1)
    row = metrics.summary(y_true, np.where(predictions >= 0, predictions, 0))
    row["accuracy"] = float(np.mean(predictions == y_true))
    row["answered"] = float(np.mean(llm_labels >= 0))
    return row


def threshold_share(cnn_probs: np.ndarray, threshold: float) -> float:
    return float(np.mean(cnn_probs.max(1) < threshold))


def per_class_accuracy(y_true: np.ndarray, predictions: np.ndarray) -> dict[str, float | None]:
    return {name: (float(np.mean(predictions[y_true == k] == k)) if np.any(y_true == k) else None)
            for k, name in enumerate(EMOTIONS)}


# -- the report ------------------------------------------------------------------------------
def policy_curves(y: np.ndarray, cnn_probs: np.ndarray, llm: LlmAnswers, model: FusionModel
                  ) -> dict[str, list[float]]:
    """Accuracy at every share in SHARES for the replace policy and the learned fusion."""
    return {"replace": [metrics.accuracy(y, cascade_predictions(cnn_probs, llm.labels, s))
                        for s in SHARES],
            "learned": [metrics.accuracy(y, learned_predictions(model, cnn_probs, llm, s))
                        for s in SHARES]}


def _best_share(scores: list[float], max_share: float) -> int:
    allowed = [i for i, s in enumerate(SHARES) if s <= max_share + 1e-9]
    return max(allowed, key=lambda i: (scores[i], -i))


def held_out_report(y: np.ndarray, cnn_probs: np.ndarray, llm: LlmAnswers, seed: int,
                    max_share: float) -> dict[str, Any]:
    """Fit and choose on the first half; every figure on the second."""
    fit, held = split_halves(y, seed)
    model = fit_fusion(y[fit], cnn_probs[fit], llm.subset(fit), max_share, seed=seed)
    first = policy_curves(y[fit], cnn_probs[fit], llm.subset(fit), model)
    second = policy_curves(y[held], cnn_probs[held], llm.subset(held), model)
    # the learned policy's operating point is the one its fit chose out of fold
    chosen = {"replace": _best_share(first["replace"], max_share),
              "learned": SHARES.index(model.provenance["share_cap"])}
    policy = max(chosen, key=lambda name: first[name][chosen[name]])
    y2, p2, llm2 = y[held], cnn_probs[held], llm.subset(held)
    cnn = metrics.summary(y2, p2.argmax(1))
    recal = metrics.summary(y2, model.recalibrate(p2).argmax(1))
    learned_share = SHARES[chosen["learned"]]
    sent = faces_to_ask(model, p2, learned_share)
    return {
        "max_share": max_share,
        "chosen_policy_on_first_half": policy,
        "chosen_share_on_first_half": SHARES[chosen[policy]],
        "first_half_accuracy": first[policy][chosen[policy]],
        "second_half_cnn": cnn,
        "second_half_cnn_recalibrated": recal,
        "second_half_llm": llm_alone(y2, llm2.labels),
        "second_half_replace": {"share": SHARES[chosen["replace"]],
                                "accuracy": second["replace"][chosen["replace"]]},
        "second_half_learned": {"share": learned_share, "sent": len(sent) / len(y2),
                                "accuracy": second["learned"][chosen["learned"]]},
        "second_half_cascade": metrics.summary(y2, (
            learned_predictions(model, p2, llm2, learned_share) if policy == "learned"
            else cascade_predictions(p2, llm2.labels, SHARES[chosen["replace"]]))),
        "llm_contribution": second["learned"][chosen["learned"]] - recal["accuracy"],
        "learned_minus_cnn_min_over_shares": float(min(second["learned"]) - cnn["accuracy"]),
        "curve": [{"share_sent": s, "replace": r, "learned": lr, "llm_contribution": lr - recal["accuracy"]}
                  for s, r, lr in zip(SHARES, second["replace"], second["learned"], strict=True)],
        "per_class_accuracy": {"cnn": per_class_accuracy(y2, p2.argmax(1)),
                               "llm": per_class_accuracy(y2, llm2.labels)},
        "tokens_per_face_asked": _tokens_per_face(llm2.tokens[llm2.answered]),
    }


def all_faces_out_of_fold(y: np.ndarray, cnn_probs: np.ndarray, llm: LlmAnswers,
                          folds: int = FOLDS, repeats: int = 5) -> dict[str, float]:
    """What the answers hold beyond the CNN at all: every face asked and fused, each fold scored
    by models fitted on the others. No routing can gain more than this on new faces (with as
    much fitting data), so a gain near zero here means the endpoint does not help under these
    labels, whatever the share sent. Its standard error is the faces' (paired: each face
    right or wrong with and without its answer, averaged over the repeats): on a few hundred
    faces an endpoint that knows nothing shows a gain of a point or two either way."""
    recalibrated, fused = np.zeros(len(y)), np.zeros(len(y))  # times right, per face
    for repeat in range(repeats):
        for train, test in fold_splits(len(y), folds, seed=repeat):
            model = fit_models(y[train], cnn_probs[train], llm.subset(train))
            predictions = model.recalibrate(cnn_probs[test]).argmax(1)
            recalibrated[test] += predictions == y[test]
            answered = test[llm.answered[test]]
            predictions[llm.answered[test]] = model.fuse(cnn_probs[answered],
                                                         llm.probs[answered]).argmax(1)
            fused[test] += predictions == y[test]
    gains = (fused - recalibrated) / repeats
    return {"folds": folds, "repeats": repeats,
            "recalibrated_accuracy": float(recalibrated.mean() / repeats),
            "fused_accuracy": float(fused.mean() / repeats), "gain": float(gains.mean()),
            "gain_standard_error": float(gains.std(ddof=1) / np.sqrt(len(y)))
            if len(y) > 1 else 0.0}


def held_out_figures(y: np.ndarray, cnn_probs: np.ndarray, llm: LlmAnswers, max_share: float,
                     splits: int = SPLITS) -> dict[str, Any]:
    """The held-out comparison on the seed-0 halves, plus its spread over ``splits`` different
    halves: on a half of ~1,800 faces one face is 0.06 points and the split alone moves the
    LLM's contribution by several tenths, so one split's figure is not the endpoint's worth."""
    runs = [held_out_report(y, cnn_probs, llm, seed, max_share) for seed in range(splits)]
    contribution = np.array([run["llm_contribution"] for run in runs])
    versus_cnn = np.array([run["second_half_learned"]["accuracy"]
                           - run["second_half_cnn"]["accuracy"] for run in runs])
    spread = {"splits": splits,
              "llm_contribution_mean": float(contribution.mean()),
              "llm_contribution_standard_error": float(contribution.std(ddof=1) / np.sqrt(splits))
              if splits > 1 else 0.0,
              "llm_contribution_range": [float(contribution.min()), float(contribution.max())],
              "learned_minus_cnn_mean": float(versus_cnn.mean()),
              "learned_minus_cnn_min": float(versus_cnn.min()),
              "sent_mean": float(np.mean([run["second_half_learned"]["sent"] for run in runs]))}
    return {**runs[0], "repeated_splits": spread,
            "all_faces_out_of_fold": all_faces_out_of_fold(y, cnn_probs, llm)}


def _tokens_per_face(tokens: np.ndarray) -> list[float]:
    return [float(x) for x in tokens.mean(0)] if len(tokens) else [0.0, 0.0]


def cost_report(held: dict[str, Any], config: LlmConfig) -> dict[str, Any]:
    """USD per face sent (from the replies' ``usage``) and per hour of video with one face in
    view at the learned operating point (at most one question per cooldown)."""
    prompt, completion = held["tokens_per_face_asked"]
    price_in, price_out = config.prices_per_million()
    per_face = (prompt * price_in + completion * price_out) / 1e6
    share = held["second_half_learned"]["sent"]
    per_hour = share * QUESTIONS_PER_HOUR_PER_FACE * per_face
    return {"model": config.model, "price_per_million": [price_in, price_out],
            "tokens_per_face": [prompt, completion], "usd_per_face": per_face,
            "share_sent": share, "usd_per_hour_one_face": per_hour}


def cascade_report(y_true: np.ndarray, cnn_probs: np.ndarray, llm: LlmAnswers,
                   threshold: float, config: LlmConfig, max_share: float = 1.0) -> dict[str, Any]:
    """Every row of the comparison, the replace-policy curve, and the held-out comparison."""
    present = np.unique(y_true)
    cnn = metrics.summary(y_true, cnn_probs.argmax(1))
    default_share = threshold_share(cnn_probs, threshold)
    curve = [{"share_sent": share,
              **metrics.summary(y_true, cascade_predictions(cnn_probs, llm.labels, share))}
             for share in SHARES]
    held = held_out_figures(y_true, cnn_probs, llm, max_share)
    return {
        "rows": {
            "cnn": cnn,
            "llm": llm_alone(y_true, llm.labels),
            f"cascade (threshold {threshold:g}, {default_share:.0%} sent)": metrics.summary(
                y_true, cascade_predictions(cnn_probs, llm.labels, default_share)),
            "random (mean of 10)": metrics.random_baseline(y_true, present, runs=10),
            "majority class": metrics.majority_baseline(y_true),
        },
        "curve": curve,
        "held_out": held,
        "cost": cost_report(held, config),
        "llm_stats": llm.stats.to_dict(),
        "share_answered": float(np.mean(llm.answered)),
    }
