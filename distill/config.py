"""What a distillation run is asked to do: :class:`DistillConfig`, its defaults, and up-front validation.

The config is plain data (it is pickled into checkpoints and Ultralytics' DDP launcher file), validated once on
creation so a typo fails before any model is built.
"""

from __future__ import annotations

from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any

from .errors import DistillError

FEATURE_LOSSES = ("cwd", "mgd", "mimic", "none")
SCHEDULES = ("constant", "linear", "cosine")
LAYER_PRESETS = ("neck", "backbone-neck")

#: Default weight of each feature loss (the losses are already normalised per channel / per element; MGD's scale lives
#: in ``mgd_alpha``, 2e-5 as in the paper). Measured on BCCD (``benchmarks/README.md``): ×5 on CWD, a linear decay and
#: KD off for the last 5 epochs did not beat 1.0, constant.
DEFAULT_FEATURE_WEIGHTS = {"cwd": 1.0, "mgd": 1.0, "mimic": 1.0, "none": 0.0}


@dataclass
class DistillConfig:
    """Knowledge-distillation settings, independent of the data and training hyper-parameters.

    Attributes:
        teacher (str): Teacher weights (``.pt``, normal use) or model ``.yaml`` (random init, for tests).
        loss (str): Feature loss: ``mimic`` (default: with the logit loss, the best student in the BCCD accuracy
            benchmark, ``benchmarks/README.md``), ``cwd``, ``mgd`` or ``none``.
        logit (bool): Also distil the head outputs (MSE on box distribution, class scores, mask coefficients,
            keypoints — whatever both heads produce in the same shape).
        layers (str | list[int]): Student layers: ``neck`` (the Detect head's inputs), ``backbone-neck`` (every
            CSP block: C2f / C3k2) or explicit indices such as ``[15, 18, 21]`` / ``"15,18,21"``.
        teacher_layers (str | list[int] | None): Teacher layers when the topologies differ; default: the same preset
            resolved on the teacher, or the same indices.
        online (bool): Train the teacher jointly on its own task loss (its features are detached in the KD loss).
        feat_weight (float | None): Feature-loss weight; ``None`` takes :data:`DEFAULT_FEATURE_WEIGHTS`.
        logit_weight (float): Logit-loss weight (0.25, the seed implementation's default).
        tau (float): CWD softmax temperature (1.0, Shu et al. 2021).
        mgd_ratio (float): MGD fraction of spatial positions masked out (0.65, Yang et al. 2022).
        mgd_alpha (float): MGD loss scale (2e-5, Yang et al. 2022).
        schedule (str): KD weight over epochs: ``constant`` (default), ``linear`` or ``cosine`` decay to 0.
        distill_off_epochs (int): Switch KD off for the last N epochs (RTMDet-style, when mosaic closes).
    """

    teacher: str
    loss: str = "mimic"
    logit: bool = True
    layers: str | list[int] = "neck"
    teacher_layers: str | list[int] | None = None
    online: bool = False
    feat_weight: float | None = None
    logit_weight: float = 0.25
    tau: float = 1.0
    mgd_ratio: float = 0.65
    mgd_alpha: float = 2e-5
    schedule: str = "constant"
    distill_off_epochs: int = 0
    extra: dict[str, Any] = field(default_factory=dict, repr=False)  # reserved for forward-compatible keys

    def __post_init__(self) -> None:
        """Normalise and validate every field; raise :class:`DistillError` naming the first bad value."""
        self.teacher = str(self.teacher)
        self.loss = str(self.loss).lower()
        if self.loss not in FEATURE_LOSSES:
            raise DistillError(f"unknown loss '{self.loss}': choose one of {', '.join(FEATURE_LOSSES)}")
        if self.schedule not in SCHEDULES:
            raise DistillError(f"unknown schedule '{self.schedule}': choose one of {', '.join(SCHEDULES)}")
        self.layers = parse_layers(self.layers, "layers")
        if self.teacher_layers is not None:
            self.teacher_layers = parse_layers(self.teacher_layers, "teacher_layers")
        if self.feat_weight is None:
            self.feat_weight = DEFAULT_FEATURE_WEIGHTS[self.loss]
        for name in ("feat_weight", "logit_weight", "tau", "mgd_alpha"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or value < 0:
                raise DistillError(f"{name} must be a non-negative number, got {value!r}")
            setattr(self, name, float(value))
        if self.tau == 0:
            raise DistillError("tau must be > 0, got 0")
        if not 0.0 <= self.mgd_ratio < 1.0:
            raise DistillError(f"mgd_ratio must be in [0, 1), got {self.mgd_ratio!r}")
        if int(self.distill_off_epochs) != self.distill_off_epochs or self.distill_off_epochs < 0:
            raise DistillError(f"distill_off_epochs must be a non-negative integer, got {self.distill_off_epochs!r}")
        self.distill_off_epochs = int(self.distill_off_epochs)
        if self.loss == "none" and not self.logit:
            raise DistillError("nothing to distil: loss='none' with the logit loss off")

    @property
    def has_features(self) -> bool:
        """Whether a feature loss is configured."""
        return self.loss != "none"

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


#: Every field's shipped default (``teacher`` has none). The CLI, the pipeline step and the Kubeflow pipeline take
#: their defaults from here, so the configuration the accuracy benchmark measured best is set in one place.
DEFAULTS: dict[str, Any] = {
    f.name: f.default for f in fields(DistillConfig) if f.default is not MISSING and f.name != "extra"
}


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
