"""What a distillation run is asked to do: :class:`DistillConfig`, its defaults, and up-front validation.

The config is plain data (it is pickled into checkpoints and Ultralytics' DDP launcher file), validated once on
creation so a typo fails before any model is built.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from typing import Any

from .errors import DistillError, plain_message, shown
from .losses.registry import feature_loss_weights

#: Default weight of each feature loss, by name: what each loss module declares on its class (why: its docstring), read
#: without importing it or torch (:mod:`distill.losses.registry`); ``none`` (no feature term) last, weight 0.
DEFAULT_FEATURE_WEIGHTS = feature_loss_weights()
FEATURE_LOSSES = tuple(DEFAULT_FEATURE_WEIGHTS)
LOGIT_LOSSES = ("mse", "kl")
SCHEDULES = ("constant", "linear", "cosine")
LAYER_PRESETS = ("neck", "backbone-neck")
#: What the teacher's objects on pool images train: ``pseudo`` (the task loss, as labels; and the KD terms) or
#: ``soft`` (the KD terms only: the task loss ignores them, :mod:`distill.engine.soft_pool`).
POOL_TARGETS = ("pseudo", "soft", "online")
#: Which teacher makes ``online`` pool targets: the ``frozen`` big teacher, or after ``burn_in`` epochs a mean teacher,
#: an ``ema`` of the student (:mod:`distill.engine.online_pool`).
POOL_TEACHERS = ("frozen", "ema", "auto")
#: Tasks whose ``logit_conf_weight`` default (``None``) resolves on: measured on tiger-pose (``DistillConfig``).
CONF_WEIGHT_TASKS = ("pose",)
#: Tasks on which an unlabelled pool keeps the KD terms by default (``pool_kd=None``): measured on tiger-pose.
POOL_KD_TASKS = ("pose",)
#: ``distill_off_epochs`` value meaning "the epochs Ultralytics trains with mosaic closed" (``-1`` is accepted too).
CLOSE_MOSAIC = "close_mosaic"


def _kd(
    kind: type,
    help: str,  # noqa: A002 (argparse's word)
    choices: tuple[str, ...] | None = None,
    optional: bool = False,
    parse: Any = None,
) -> dict[str, Any]:
    """Field metadata of a KD setting: what :mod:`distill.settings` derives the CLI flag and pipeline parameter from."""
    meta = {"kind": kind, "help": help, "choices": choices, "optional": optional}
    return meta | ({"parse": parse} if parse is not None else {})


@dataclass
class DistillConfig:
    """Knowledge-distillation settings, independent of the data and training hyper-parameters.

    Attributes:
        teacher (str): Teacher weights (``.pt``, normal use) or model ``.yaml`` (random init, for tests).
        loss (str): Feature loss: ``mimic`` (default: with the logit loss, the best student in the BCCD accuracy
            benchmark, ``benchmarks/README.md``), ``cwd``, ``mgd``, ``ncwd`` (CWD on batch-normalised maps, RTMDet's
            recipe), ``pkd`` (Pearson correlation), any other loss a module of :mod:`distill.losses` declares
            (:mod:`distill.losses.registry`), or ``none``.
        logit (bool): Also distil the head outputs (box distribution, class scores, mask coefficients, keypoints —
            whatever both heads produce in the same shape).
        logit_loss (str): How head outputs are compared: ``mse`` (default, raw logits) or ``kl`` (box distributions
            by Localization Distillation, class scores by binary KL, decoded keypoints OKS-style, assembled masks;
            ``distill.losses.distribution``). The default stays ``mse`` until the accuracy benchmark decides.
        layers (str | list[int]): Student layers: ``neck`` (the Detect head's inputs), ``backbone-neck`` (every
            CSP block: C2f / C3k2) or explicit indices such as ``[15, 18, 21]`` / ``"15,18,21"``.
        teacher_layers (str | list[int] | None): Teacher layers when the topologies differ; default: the same preset
            resolved on the teacher, or the same indices.
        online (bool): Train the teacher jointly on its own task loss (its features are detached in the KD loss).
        feat_weight (float | None): Feature-loss weight; ``None`` takes :data:`DEFAULT_FEATURE_WEIGHTS`.
        logit_weight (float): Logit-loss weight (0.25, the seed implementation's default; for both logit losses).
        logit_tau (float): ``kl`` logit loss: temperature of the box distributions (10.0, Zheng et al. 2022).
        logit_conf_weight (bool | None): Weight the logit terms per anchor by the teacher's confidence instead of a
            plain mean over anchors: ``kl``: the box and class terms (its keypoint and mask terms always are); ``mse``:
            every term. ``None`` (default): on for pose, off for detect and segment (:meth:`for_task`). On Ultralytics'
            tiger-pose set it lifted keypoint mAP50-95 far above the baseline where the plain mean gained nothing: a
            keypoint regressed at every background anchor teaches noise (``benchmarks/README.md``, section 'Pose on a
            real keypoint set (tiger)'); unmeasured on detection and segmentation, so off there.
        tau (float): CWD / NCWD softmax temperature (1.0, Shu et al. 2021; MMYOLO's RTMDet configs).
        mgd_ratio (float): MGD fraction of spatial positions masked out (0.65, Yang et al. 2022).
        mgd_alpha (float): MGD loss scale (2e-5, Yang et al. 2022).
        schedule (str): KD weight over epochs: ``constant`` (default), ``linear`` or ``cosine`` decay to 0.
        distill_off_epochs (int | str): Switch KD off for the last N epochs; ``"close_mosaic"`` (or ``-1``, the
            default): for the epochs the trainer trains without mosaic (its ``close_mosaic``), RTMDet's two-stage
            recipe; a run without a mosaic stage keeps KD throughout
            (:func:`distill.engine.schedule.resolve_off_epochs`). The default because it beat KD throughout on average
            in every detection table measured, lower on no BCCD seed (``benchmarks/README.md``, section 'Deciding CPU
            table'), and its last stage needs no teacher forward; ``0``: KD throughout (the earlier default), which
            scored a little higher on the synthetic segment and pose sets (within noise).
        pseudo_conf (float): With an unlabelled pool (:mod:`distill.engine.pool_data`): the teacher's confidence from
            which a prediction becomes a pseudo-label. 0.25 (Ultralytics' predictor default): in make demo's regime with
            a pool it scored far above 0.5 — at 0.5 the teacher labelled a minority of the pool images, with fewer
            boxes per image than the labelled images hold, so the objects it missed were trained as background; at
            0.25 it labelled nearly all of them (``benchmarks/README.md``, section 'Unlabelled pool, make demo's
            regime').
        unlabeled_ratio (float): With an unlabelled pool: the most pool images per labelled image in an epoch (the
            labelled images are listed repeatedly to keep it); 0: every image once. 1 (the default): the true labels
            weigh at least as much as the pseudo-labels — against 0 it lifted the pool student in every regime
            measured (make demo's, and BCCD at several label fractions), beyond the extra steps it costs when the pool
            outnumbers the labels (``benchmarks/README.md``, section '``unlabeled_ratio`` = 1').
        pool_targets (str): With an unlabelled pool: ``pseudo`` (default) — the teacher's objects train the task loss
            as labels, with the KD terms on every image; ``soft`` — the KD terms alone teach them: the task loss
            ignores the anchors assigned to them, neither object nor background (:mod:`distill.engine.soft_pool`);
            ``online`` — a pool image's targets are made during training, on the very augmented view the student
            trains on, by ``pool_teacher`` (:mod:`distill.engine.online_pool`; detect so far).
        pool_teacher (str): ``online`` targets: ``frozen`` (default) — the big teacher; ``ema`` — after ``burn_in``
            epochs a mean teacher, an exponential moving average of the student, which keeps improving once the
            student passes the frozen teacher; ``auto`` — the frozen teacher until the student's validation fitness
            reaches the frozen teacher's (measured once before training), then the mean teacher, started from the
            student's EMA. Once the mean teacher takes over it makes the pool targets and the logit term's targets,
            and the feature term stops (the frozen teacher is no longer run).
        burn_in (int): ``pool_teacher="ema"``: epochs the frozen teacher makes the targets before the mean teacher
            (started from the student then) takes over; shorter than the run.
        ema_decay (float): ``pool_teacher="ema"``: the mean teacher's decay per optimizer step, in (0, 1).
        uncertain_conf (float): ``online`` targets: a detection between this confidence and ``pseudo_conf`` is
            uncertain — neither object nor background for the task loss; ``pseudo_conf`` itself: none is.
        strong_aug (bool): ``online`` targets: the student sees a stronger view (colour, noise, erased patches) of
            the images holding pool regions than the teacher that makes their targets.
        pool_keep_empty (bool | None): With an unlabelled pool: also train on the pool images the teacher found no
            object in at ``pseudo_conf`` on the clean image. ``None`` (the default): kept with ``online`` targets
            (each view's targets are made anew, so a view may hold objects), left out otherwise; ``true`` with
            ``pseudo`` targets trains them as background; ``false`` with ``online`` trains the pool images the
            offline pseudo-labels keep — label-then-train's image list, so the two differ only in their targets.
        pool_rounds (int): With an unlabelled pool: self-training rounds (:mod:`distill.engine.rounds`). 1: the teacher
            labels the pool once; from round 2 the previous round's student, which learnt from the pool and usually
            ends above its teacher, labels it again and teaches a new student. Each round costs a whole run.
        pool_kd (bool | None): With an unlabelled pool: also apply the KD terms (``loss``, ``logit``). Off, the
            student learns from the labels and the teacher's pseudo-labels alone — label-then-train, which scored
            level with every KD variant measured on boxes and masks at a lower training cost (no teacher forward per
            batch; ``benchmarks/README.md``, the 'Unlabelled pool' sections); :meth:`for_pool` then turns the terms
            off. ``None`` (the default) resolves by task: on for pose (:data:`POOL_KD_TASKS`: the confidence-weighted
            logit terms carried a real keypoint set's keypoints further than the hard pseudo-labels) and with
            ``pool_targets="soft"`` (which teaches the pool through the KD terms alone), off otherwise. Without a pool
            the KD terms always apply.
    """

    teacher: str
    loss: str = field(default="mimic", metadata=_kd(str, "feature loss", FEATURE_LOSSES))
    logit: bool = field(default=True, metadata=_kd(bool, "also distil the head outputs (logit loss)"))
    logit_loss: str = field(default="mse", metadata=_kd(str, "mse: raw head logits; kl: LD box KL, class binary KL, "
                                                        "OKS keypoints, masks", LOGIT_LOSSES))  # fmt: skip
    layers: str | list[int] = field(default="neck", metadata=_kd(str, "neck | backbone-neck | I,J,K"))
    teacher_layers: str | list[int] | None = field(
        default=None, metadata=_kd(str, "teacher layers if they differ from the student's", optional=True)
    )
    online: bool = field(default=False, metadata=_kd(bool, "train the teacher jointly (off: offline, frozen)"))
    feat_weight: float | None = field(
        default=None, metadata=_kd(float, f"feature-loss weight (per loss: {DEFAULT_FEATURE_WEIGHTS})", optional=True)
    )
    logit_weight: float = field(default=0.25, metadata=_kd(float, "logit-loss weight"))
    logit_tau: float = field(default=10.0, metadata=_kd(float, "kl logit loss: box-distribution temperature"))
    logit_conf_weight: bool | None = field(
        default=None,
        metadata=_kd(bool, "weight logit terms per anchor by teacher confidence (kl: box/class terms); "
                     "unset (pipeline: empty): on for pose, off otherwise", optional=True),
    )  # fmt: skip
    tau: float = field(default=1.0, metadata=_kd(float, "CWD/NCWD temperature"))
    mgd_ratio: float = field(default=0.65, metadata=_kd(float, "MGD masked fraction"))
    mgd_alpha: float = field(default=2e-5, metadata=_kd(float, "MGD loss scale"))
    schedule: str = field(default="constant", metadata=_kd(str, "KD weight over epochs", SCHEDULES))
    distill_off_epochs: int | str = field(
        default=CLOSE_MOSAIC,
        metadata=_kd(str, "switch KD off for the last N epochs, or close_mosaic (-1): while mosaic is closed",
                     parse=lambda v: parse_off_epochs(v)),
    )  # fmt: skip
    pseudo_conf: float = field(
        default=0.25, metadata=_kd(float, "unlabelled pool: the teacher's confidence from which it labels an object")
    )
    unlabeled_ratio: float = field(
        default=1.0, metadata=_kd(float, "unlabelled pool: most pool images per labelled image per epoch (0: all)")
    )
    pool_targets: str = field(
        default="pseudo",
        metadata=_kd(str, "unlabelled pool: pseudo (the teacher's objects train the task loss too), soft (KD only) "
                     "or online (made during training on the student's view, by pool_teacher)", POOL_TARGETS),
    )  # fmt: skip
    pool_teacher: str = field(
        default="frozen",
        metadata=_kd(str, "pool_targets=online: frozen (the teacher), ema (after burn_in, an EMA of the student) or "
                     "auto (ema once the student passes the teacher on val)", POOL_TEACHERS),
    )  # fmt: skip
    burn_in: int = field(
        default=10, metadata=_kd(int, "pool_teacher=ema: epochs before the mean teacher makes the pool targets")
    )
    ema_decay: float = field(default=0.99, metadata=_kd(float, "pool_teacher=ema: the mean teacher's decay per step"))
    uncertain_conf: float = field(
        default=0.1,
        metadata=_kd(float, "pool_targets=online: detections from here to pseudo_conf are neither object nor "
                     "background"),
    )  # fmt: skip
    strong_aug: bool = field(
        default=False, metadata=_kd(bool, "pool_targets=online: the student sees a stronger view than the teacher")
    )
    pool_keep_empty: bool | None = field(
        default=None,
        metadata=_kd(bool, "unlabelled pool: also train on pool images the teacher found nothing in; unset "
                     "(pipeline: empty): with pool_targets=online only", optional=True),
    )  # fmt: skip
    pool_rounds: int = field(
        default=1, metadata=_kd(int, "unlabelled pool: self-training rounds, each round's student teaching the next")
    )
    pool_kd: bool | None = field(
        default=None,
        metadata=_kd(bool, "unlabelled pool: also the KD terms (loss, logit); off: the teacher's pseudo-labels alone "
                     "(label-then-train); unset (pipeline: empty): on for pose and soft targets", optional=True),
    )  # fmt: skip
    extra: dict[str, Any] = field(default_factory=dict, repr=False)  # reserved for forward-compatible keys

    def __post_init__(self) -> None:
        """Normalise and validate every field; raise :class:`DistillError` naming the first bad value."""
        self.teacher = str(self.teacher)
        self.loss = choose("loss", self.loss, FEATURE_LOSSES)
        self.logit_loss = choose("logit_loss", self.logit_loss, LOGIT_LOSSES)
        if self.logit_conf_weight is not None and not isinstance(self.logit_conf_weight, bool):
            raise DistillError(f"logit_conf_weight must be true or false, got {self.logit_conf_weight!r}")
        self.schedule = choose("schedule", self.schedule, SCHEDULES)
        self.layers = parse_layers(self.layers, "layers")
        if self.teacher_layers is not None:
            self.teacher_layers = parse_layers(self.teacher_layers, "teacher_layers")
        if self.feat_weight is None:
            self.feat_weight = DEFAULT_FEATURE_WEIGHTS[self.loss]
        for name in ("feat_weight", "logit_weight", "tau", "logit_tau", "mgd_alpha", "unlabeled_ratio"):
            setattr(self, name, _number(self, name, "a non-negative number", lambda v: v >= 0))
        for name in ("tau", "logit_tau"):
            if getattr(self, name) == 0:
                raise DistillError(f"{name} must be > 0, got 0")
        self.mgd_ratio = _number(self, "mgd_ratio", "in [0, 1)", lambda v: 0 <= v < 1)
        self.distill_off_epochs = parse_off_epochs(self.distill_off_epochs)
        self.pseudo_conf = _number(self, "pseudo_conf", "in (0, 1]", lambda v: 0 < v <= 1)
        self.pool_targets = choose("pool_targets", self.pool_targets, POOL_TARGETS)
        if isinstance(self.pool_rounds, bool) or not isinstance(self.pool_rounds, int) or self.pool_rounds < 1:
            raise DistillError(f"pool_rounds must be a whole number >= 1, got {self.pool_rounds!r}")
        self._check_online_pool()

    def _check_online_pool(self) -> None:
        """Validate the settings of ``pool_targets="online"`` (checked whatever the targets, like every field)."""
        self.pool_teacher = choose("pool_teacher", self.pool_teacher, POOL_TEACHERS)
        if isinstance(self.burn_in, bool) or not isinstance(self.burn_in, int) or self.burn_in < 0:
            raise DistillError(f"burn_in must be a whole number of epochs >= 0, got {self.burn_in!r}")
        self.ema_decay = _number(self, "ema_decay", "in (0, 1)", lambda v: 0 < v < 1)
        self.uncertain_conf = _number(self, "uncertain_conf", "in (0, 1]", lambda v: 0 < v <= 1)
        if self.pool_targets == "online" and self.uncertain_conf > self.pseudo_conf:
            raise DistillError(f"uncertain_conf {self.uncertain_conf} must not exceed pseudo_conf {self.pseudo_conf}")
        if not isinstance(self.strong_aug, bool):
            raise DistillError(f"strong_aug must be true or false, got {self.strong_aug!r}")
        for name in ("pool_kd", "pool_keep_empty"):
            if getattr(self, name) is not None and not isinstance(getattr(self, name), bool):
                raise DistillError(f"{name} must be true or false, got {getattr(self, name)!r}")
        if self.pool_targets == "soft" and self.pool_kd is False:
            raise DistillError("pool_targets=soft teaches the pool through the KD terms alone: it needs pool_kd")
        if self.pool_targets == "online" and self.online:
            raise DistillError("pool_targets=online needs a frozen teacher: it cannot be combined with online=true")

    def for_task(self, task: str) -> DistillConfig:
        """Return this config with the settings whose default depends on the task resolved for ``task``.

        ``logit_conf_weight=None`` becomes ``True`` for pose (:data:`CONF_WEIGHT_TASKS`), else ``False``. The trainer
        calls it once the task is known, so ``distill.json`` and the checkpoint record what the run really used.
        """
        if self.logit_conf_weight is not None:
            return self
        return replace(self, logit_conf_weight=task in CONF_WEIGHT_TASKS)

    @property
    def has_features(self) -> bool:
        """Whether a feature loss is configured."""
        return self.loss != "none"

    @property
    def keeps_empty(self) -> bool:
        """Whether the pool images without a pseudo-label are trained on (``pool_keep_empty``, resolved)."""
        return self.pool_keep_empty if self.pool_keep_empty is not None else self.pool_targets == "online"

    @property
    def distils(self) -> bool:
        """Whether any KD term is on; without one a run with a pool is label-then-train (the teacher labels it)."""
        return self.has_features or self.logit

    def for_pool(self, pool: bool, task: str) -> DistillConfig:
        """Return the config a ``task`` run with (``pool``) or without an unlabelled pool trains, fully resolved.

        :meth:`for_task` first; then with a pool ``pool_kd=None`` resolves (on for :data:`POOL_KD_TASKS` and soft
        targets) and, off, the feature and logit terms are off (``loss="none"``, ``logit=False``): the run is
        label-then-train. Without a pool ``pool_kd`` means nothing and is recorded as ``None``. The trainer gets the
        resolved config, so ``distill.json`` and the checkpoint record what ran.
        """
        config = self.for_task(task)
        if not pool:
            return config if config.pool_kd is None else replace(config, pool_kd=None)
        kd = config.pool_kd if config.pool_kd is not None else config.pool_targets == "soft" or task in POOL_KD_TASKS
        return replace(config, pool_kd=kd, **({} if kd else {"loss": "none", "logit": False}))

    def check_run(self, epochs: int, pool: bool) -> None:
        """Refuse what only the run makes wrong: nothing to distil without a pool, a burn-in as long as the run."""
        if not self.distils and not pool:
            raise DistillError(
                "nothing to distil: loss='none' with the logit loss off and no unlabelled pool (with one it is "
                "label-then-train; without, plain training: 'yolo-distill train')"
            )
        if self.pool_targets == "online" and self.pool_teacher == "ema" and self.burn_in >= epochs:
            raise DistillError(
                f"burn_in {self.burn_in} must be shorter than the run's {epochs} epochs (pool_teacher=ema)"
            )

    def to_dict(self) -> dict[str, Any]:
        """Return the config as JSON-serialisable plain data."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DistillConfig:
        """Build a config from :meth:`to_dict` output; unknown keys are an error naming them."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise DistillError(f"unknown distillation setting(s): {', '.join(unknown)}")
        return cls(**data)


def choose(name: str, value: Any, choices: tuple[str, ...]) -> str:
    """Return ``value`` as one of ``choices``, in any case (``MIMIC`` is ``mimic``), or refuse it naming the choices.

    The one check of every setting with a fixed set of values: :class:`DistillConfig` and the settings spec
    (:meth:`distill.settings.Option.coerce`: flags, pipeline text, step options) call it alike.
    """
    text = str(value).strip().lower()
    if text not in choices:
        raise DistillError(f"{name} must be one of {', '.join(choices)}, got {shown(value)}")
    return text


def _number(config: DistillConfig, name: str, rule: str, valid: Callable[[float], bool]) -> float:
    """Return the field ``name`` of ``config`` as a float, refusing what is not a finite number or breaks ``rule``.

    NaN and infinity are refused for every number: a NaN weight trains to the end with NaN losses, an infinite one
    overflows the first step (issue 37); comparisons alone (``value < 0``) would let NaN through.
    """
    value = getattr(config, name)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or not valid(value):
        raise DistillError(f"{name} must be {rule}, got {value!r}")
    return float(value)


#: Every field's shipped default (``teacher`` has none). The CLI, the pipeline step and the Kubeflow pipeline take
#: their defaults from here, so the configuration the accuracy benchmark measured best is set in one place.
DEFAULTS: dict[str, Any] = {
    f.name: f.default for f in fields(DistillConfig) if f.default is not MISSING and f.name != "extra"
}


#: The smallest training image size: one stride of the models; Ultralytics raises anything smaller to it (a warning).
MIN_IMGSZ = 32


def check_training(imgsz: Any = None, batch: Any = None) -> None:
    """Refuse the training numbers Ultralytics' own argument check (``check_cfg``) lets through; ``None``: not given.

    ``imgsz`` below :data:`MIN_IMGSZ` would train at another size than asked; a ``batch`` of 0 or below -1 would
    silently run AutoBatch, a NaN or infinite one crash the trainer. ``epochs`` and ``seed`` are Ultralytics' to
    check (:func:`check_arguments`), so they are not checked twice.

    Raises:
        DistillError: Naming the setting, its value and what is valid.

    Examples:
        >>> check_training(imgsz=64, batch=-1)
        >>> check_training(batch=0)
        Traceback (most recent call last):
        distill.errors.DistillError: batch must be a whole number >= 1, -1 (AutoBatch) or a fraction in (0, 1) of the GPU memory (AutoBatch), got 0
    """  # noqa: E501
    if imgsz is not None and not (_whole(imgsz) and imgsz >= MIN_IMGSZ):
        raise DistillError(f"imgsz must be a whole number of pixels >= {MIN_IMGSZ}, got {imgsz!r}")
    if batch is not None and not ((_whole(batch) and (batch >= 1 or batch == -1)) or _fraction(batch)):
        raise DistillError(
            "batch must be a whole number >= 1, -1 (AutoBatch) or a fraction in (0, 1) of the GPU memory (AutoBatch), "
            f"got {batch!r}"
        )


def _whole(value: Any) -> bool:
    """Whether ``value`` is an ``int`` (not ``True``, nor ``16.0``: Ultralytics' loader and size check need ints)."""
    return isinstance(value, int) and not isinstance(value, bool)


def _fraction(value: Any) -> bool:
    """Whether ``value`` is a number strictly between 0 and 1 (Ultralytics' AutoBatch share of GPU memory)."""
    return not isinstance(value, bool) and isinstance(value, int | float) and 0 < value < 1


def parse_off_epochs(value: int | str) -> int | str:
    """Parse ``distill_off_epochs``: a non-negative integer, or ``"close_mosaic"`` / ``-1`` (follow close_mosaic).

    Examples:
        >>> parse_off_epochs("3"), parse_off_epochs(-1), parse_off_epochs("Close_Mosaic")
        (3, 'close_mosaic', 'close_mosaic')
    """
    if isinstance(value, str):
        text = value.strip().lower()
        if text == CLOSE_MOSAIC:
            return CLOSE_MOSAIC
        try:
            value = int(text)
        except ValueError:
            value = text
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < -1:
        raise DistillError(f"distill_off_epochs must be a non-negative integer or '{CLOSE_MOSAIC}' (-1), got {value!r}")
    return CLOSE_MOSAIC if value == -1 else value


def parse_layers(value: str | list[int] | tuple[int, ...], name: str = "layers") -> str | list[int]:
    """Parse a layer spec: a preset name, ``"15,18,21"`` or a list of ints.

    Examples:
        >>> parse_layers("15, 18,21")
        [15, 18, 21]
        >>> parse_layers("neck")
        'neck'
    """
    if isinstance(value, str):
        text = value.strip().lower()
        if text in LAYER_PRESETS:
            return text
        parts = [p.strip() for p in text.split(",") if p.strip()]
        try:
            value = [int(p) for p in parts]
        except ValueError:
            raise DistillError(
                f"{name}='{text}' is neither a preset ({', '.join(LAYER_PRESETS)}) nor a comma-separated list of "
                "layer indices"
            ) from None
    indices = list(value)
    if not indices or not all(isinstance(i, int) and not isinstance(i, bool) for i in indices):
        raise DistillError(f"{name}={value!r} must be a non-empty list of integer layer indices")
    if len(set(indices)) != len(indices):
        raise DistillError(f"{name}={indices} repeats a layer index")
    return indices


def check_arguments(**args: Any) -> None:
    """Check training arguments with Ultralytics' own rules (``epochs=-1`` → one :class:`DistillError` line).

    Called by :func:`distill.engine.api.train` / :func:`distill.engine.api.distill`, the settings' checks and, before
    any download, by the pipeline steps.
    """
    from ultralytics.cfg import check_cfg

    try:
        check_cfg({k: v for k, v in args.items() if v is not None})
    except (TypeError, ValueError) as e:
        raise DistillError(plain_message(e)) from None
