"""The register step's champion/challenger gate: whether a new version takes ``champion``, and the safe alias move.

Held apart from :mod:`distill.steps.register` (which creates and completes the version, then asks :func:`_promote`)
because deciding a promotion is a concern of its own: reading and checking the current champion's record, comparing
the challenger with it by the promotion gate, and moving the alias. ``champion`` moves to the new version only when
its gain over the current champion on the *same* test images passes the gate (:mod:`distill.registry.gate`: ``gate=ci``,
the lower bound of the interval at ``gate_level`` at least ``min_gain``; ``point``: the difference) — the champion's
per-image matches come from its own evaluation of the same data, else it is validated again on the candidate's. A
champion whose record cannot be read is no comparable champion: the version is promoted as if there were none
(:func:`champion_record`, :class:`UnreadableChampion`). MLflow has no compare-and-set on aliases, so a move is read
back and judged again when a concurrent register moved it (:func:`_promote`). The version tags that record the
decision (:data:`TAG_DECISION`, :data:`TAG_REASON`, :func:`decision_tags`) are defined here too.
"""

from __future__ import annotations

import io
import math
import sys
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..data import storage
from ..errors import DistillError, RunFailure
from ..registry.bootstrap import ImageStats, load_stats
from ..registry.gate import judge, run_noise
from .common import EVAL_SPLITS, fetch_dataset, fetch_model
from .evaluate import STATS, measure, primary_suffix

#: Version tags recording the gate's decision ("promoted" / "kept") and why; a version without them is undecided.
TAG_DECISION = "yolo_distill.decision"
TAG_REASON = "yolo_distill.reason"
#: How long a promotion waits before reading the alias back, and how often it judges again when it moved.
SETTLE_S = 1.0
MAX_PROMOTION_TRIES = 5


@dataclass
class Challenger:
    """What the gate needs of the version being registered: its score, its evaluation and the gate's settings."""

    score: float
    metrics_uri: str
    gate: dict[str, Any]

    def stats(self) -> ImageStats:
        """Its per-image matches, from the evaluation's ``image_stats.npz`` (checked complete with the evaluation)."""
        return evaluation_stats(self.metrics_uri)["distilled"]


def evaluation_stats(metrics_uri: str) -> dict[str, ImageStats]:
    """Every model's per-image matches recorded by an evaluation (``image_stats.npz`` beside its ``metrics.json``)."""
    uri = metrics_uri.rsplit("/", 1)[0] + "/" + STATS
    if storage.is_s3(uri):
        return load_stats(io.BytesIO(storage.read_bytes(uri)))
    if not Path(uri).is_file():
        raise RunFailure(f"evaluation '{metrics_uri}' has no {STATS}: evaluate again")
    return load_stats(Path(uri))


def decision_tags(judged: dict[str, Any] | None, gate: dict[str, Any]) -> dict[str, str]:
    """Return the gate's settings and the challenger − champion interval (when one was judged) as version tags."""
    tags = {"gate": gate["gate"], "gate_level": str(gate["gate_level"]), "min_gain": str(gate["min_gain"])}
    if judged:
        tags.update({"gain_over_champion": f"{judged['difference']:.6f}",
                     "gain_over_champion_low": f"{judged['low']:.6f}",
                     "gain_over_champion_high": f"{judged['high']:.6f}"})  # fmt: skip
    return tags


def _champion(mlflow_client, name: str):
    """Return the version holding ``champion``, or ``None``."""
    from mlflow.exceptions import MlflowException

    try:
        return mlflow_client.get_model_version_by_alias(name, "champion")
    except MlflowException as e:
        if e.error_code == "RESOURCE_DOES_NOT_EXIST" or "not found" in (e.message or "").lower():
            return None
        raise


def _promote(
    mlflow_client, name: str, version: str, report: dict, data_hash: str, challenger: Challenger
) -> tuple[bool, str, float | None, dict[str, Any] | None]:
    """Run the gate and move ``champion`` safely against a concurrent promotion of the same model.

    MLflow has no compare-and-set on aliases, so: the gate judges against the champion read just before the move,
    the move happens only if that champion is still in place, and afterwards the alias is read back (:func:`_holds`)
    — if another register moved it meanwhile, the gate runs again against that version (and takes the alias back
    only if this one beats it). Two racing registers so end with the better one as champion, each reporting the
    decision that holds.

    Returns:
        (tuple): ``(promoted, reason, champion score or None, the gate's judgement or None)``.
    """
    for _ in range(MAX_PROMOTION_TRIES):
        champion = _champion(mlflow_client, name)
        promoted, reason, champion_score, judged = _gate(champion, version, report, data_hash, challenger)
        if not promoted:
            return False, reason, champion_score, judged
        current = _champion(mlflow_client, name)
        if (current and current.version) != (champion and champion.version):
            continue  # moved while the gate ran: judge against the new one
        set_champion(mlflow_client, name, version)
        if _holds(mlflow_client, name, version):
            return True, reason, champion_score, judged
    raise RunFailure(f"the champion alias of '{name}' kept moving during {MAX_PROMOTION_TRIES} tries; rerun the step")


def _holds(mlflow_client, name: str, version: str) -> bool:
    """Whether ``champion`` still points at ``version`` at two reads :data:`SETTLE_S` apart.

    A racer that moved the alias just before us reads it back within one settle period, judges against us and
    moves it again if it is better; the second read sees that.
    """
    for _ in range(2):
        time.sleep(SETTLE_S)
        current = _champion(mlflow_client, name)
        if current is None or current.version != version:
            return False
    return True


def set_champion(mlflow_client, name: str, version: str) -> None:
    """Point ``champion`` at ``version`` (a seam of its own so the race test can hold both racers here)."""
    mlflow_client.set_registered_model_alias(name, "champion", version)


def _gate(
    champion, version: str, report: dict, data_hash: str, challenger: Challenger
) -> tuple[bool, str, float | None, dict[str, Any] | None]:
    """Decide whether ``version`` beats ``champion`` by the gate's rule on this evaluation's images.

    ``gate=point`` compares the two scores; ``gate=ci`` bootstraps the per-image matches with both runs' noise
    (what is compared against: :func:`champion_record`). A champion whose record cannot be read is no comparable
    champion: the version is promoted as if there were none, the reason (and a warning line) naming that champion.
    """
    if champion is None:
        return True, "first version: no champion yet", None, None
    if champion.version == version:
        return True, "already champion", challenger.score, None
    against = f"champion v{champion.version}"
    rule = challenger.gate["gate"]
    mine = challenger.stats() if rule == "ci" else None
    try:
        record = champion_record(champion, report, data_hash, rule, mine)
    except UnreadableChampion as e:
        reason = f"{against}'s record is unreadable ({e}): promoted without a comparison"
        print(f"register: warning: {reason}", file=sys.stderr, flush=True)
        return True, reason, None, None
    if rule == "point":
        gain, min_gain = challenger.score - record.score, challenger.gate["min_gain"]
        if gain > 0 and gain >= min_gain:
            return True, f"beats {against} ({record.how} {record.score:.4f}) by {gain:+.4f}", record.score, None
        return False, f"does not beat {against} ({record.how} {record.score:.4f}) by {min_gain}: {gain:+.4f}", \
            record.score, None  # fmt: skip
    noise = (report["verdict"]["gate"]["run_noise"][0], record.noise)
    judged = judge(mine, record.stats, primary_suffix(report["task"]), noise, challenger.gate, against)
    verb = "beats" if judged["passes"] else "does not beat"
    return judged["passes"], f"{verb} {against} ({record.how} {record.score:.4f}): {judged['reason']}", \
        record.score, judged  # fmt: skip


class UnreadableChampion(Exception):  # noqa: N818 (a state of the record, not an error the step reports)
    """The champion's record cannot be compared against; the message says what is wrong with it."""


@dataclass(frozen=True)
class ChampionRecord:
    """What the gate compares a challenger against, read from the champion's record.

    Its primary score on this evaluation's images and how it was got (``recorded``, or validated again); for
    ``gate=ci`` also its per-image matches and its run noise.
    """

    score: float
    how: str
    stats: ImageStats | None = None
    noise: float | None = None


def champion_record(
    champion, report: dict, data_hash: str, rule: str, challenger_stats: ImageStats | None = None
) -> ChampionRecord:
    """Read and check what the gate ``rule`` needs of ``champion``'s record; raise :class:`UnreadableChampion` if not.

    ``point``: its ``metric`` tag (a finite number) when it was scored like this evaluation, else its weights
    validated again on this evaluation's data. ``ci``: its per-image matches — from its own evaluation when that
    scored these images (``challenger_stats``'), else its weights validated again — and its run noise from the
    training log beside its weights. So the weights (``weights_uri``) are needed unless a point score is recorded;
    weights that are gone or do not load make the record unreadable too. An outage or refused credentials are not
    the record's fault: those stay the step's error, and its rerun judges.
    """
    same = _same_evaluation(champion, report, data_hash)
    if rule == "point" and same:
        return ChampionRecord(_recorded_metric(champion.tags), "recorded")
    weights = champion.tags.get("weights_uri")
    if not weights:
        raise UnreadableChampion("weights_uri tag missing")
    metric, again = report["verdict"]["primary_metric"], f"re-evaluated on dataset {data_hash}"
    if rule == "point":
        score = float(_measure_champion(weights, report, keep_stats=False)["metrics"][metric])
        return ChampionRecord(_finite(score, "its score validated again"), again)
    stats = _recorded_stats(champion, challenger_stats) if same else None
    how = "recorded"
    if stats is None:
        stats, how = _measure_champion(weights, report, keep_stats=True)["stats"], again
    score = _finite(stats.score(primary_suffix(report["task"])), "its per-image matches' score")
    return ChampionRecord(score, how, stats, run_noise(weights, metric))


def _recorded_metric(tags: dict[str, str]) -> float:
    """Return the champion's ``metric`` tag as a finite number; else raise :class:`UnreadableChampion` saying why."""
    text = tags.get("metric")
    if text is None:
        raise UnreadableChampion("metric tag missing")
    try:
        value = float(text)
    except ValueError:
        raise UnreadableChampion(f"metric tag '{text[:40]}' is not a number") from None
    return _finite(value, f"metric tag '{text}'")


def _finite(value: float, what: str) -> float:
    """Return ``value`` if it is a finite number (a comparison with nan or inf decides nothing), else raise."""
    if not math.isfinite(value):
        raise UnreadableChampion(f"{what} is {value}, not a finite number")
    return value


def _same_evaluation(champion, report: dict, data_hash: str) -> bool:
    """Whether the champion was scored like this evaluation: the same dataset, metric, split and image size."""
    return (
        champion.tags.get("dataset_hash") == data_hash
        and champion.tags.get("metric_name") == report["verdict"]["primary_metric"]
        and champion.tags.get("split") == report["split"]
        and champion.tags.get("imgsz") == str(report["imgsz"])
    )


def _measure_champion(weights: str, report: dict, keep_stats: bool) -> dict[str, Any]:
    """Validate the champion's ``weights`` on this evaluation's split with its settings.

    Weights that are not there or do not load (bad input, were they given) make the record unreadable.
    """
    try:
        local = fetch_model(weights, "champion")
    except DistillError as e:
        raise UnreadableChampion(str(e)) from None
    return measure(local, fetch_dataset(report["data"], EVAL_SPLITS), report["split"], report["imgsz"],
                   report["batch"], None, 1, keep_stats=keep_stats)  # fmt: skip


def _recorded_stats(champion, challenger_stats: ImageStats | None) -> ImageStats | None:
    """Return the champion's per-image matches from its own evaluation when it has them for these very images.

    ``None`` (validate it again) for an evaluation of an older version without per-image matches, or one that cannot
    be read or scored other images.
    """
    uri = champion.tags.get("evaluation")
    if not uri:
        return None
    try:
        stats = evaluation_stats(uri)["distilled"]
    except (RunFailure, DistillError, KeyError, ValueError, OSError, zipfile.BadZipFile):
        return None
    if challenger_stats is not None and not stats.same_images(challenger_stats):
        return None
    return stats
