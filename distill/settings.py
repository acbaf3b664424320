"""Every setting of a training step, declared once: the KD settings and the step's own options.

The KD settings are :class:`distill.config.DistillConfig`'s fields (their help, kind and choices ride in each field's
``metadata``); the step options (:data:`STEP_OPTIONS`) are declared here. From these declarations come the CLI flags
(:meth:`Option.add_to`), the TrainJob command line (:func:`command_line`), the pipeline's parameters and the values the
components hand to the step functions (:meth:`Option.coerce`) — so a new field appears everywhere, and a test checks
each layer against this module. Any other keyword is an Ultralytics train argument (``train_args`` in the pipeline,
``key=value`` on the command line), checked with Ultralytics' own rules (:func:`check_train_args`).
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import MISSING, dataclass, fields
from functools import partial
from typing import Any

from .config import DistillConfig, check_arguments, check_training, choose
from .errors import DistillError, shown
from .paths import check_name


@dataclass(frozen=True)
class Option:
    """One setting: its keyword name, kind (``str``, ``int``, ``float``, ``bool``), default, help and choices.

    ``optional`` settings accept ``None`` (the library picks: e.g. the per-loss feature weight); in the pipeline,
    which has no ``None``, they are ``""``. ``parse`` turns text (a flag value, a pipeline string) into the value.
    ``check`` refuses a typed value that is out of range (raises :class:`DistillError`); numbers are always finite;
    a setting with ``choices`` takes one of them in any case (``MIMIC`` is ``mimic``), from a flag or a pipeline alike.
    """

    name: str
    kind: type
    default: Any = None
    help: str = ""
    choices: tuple[str, ...] | None = None
    required: bool = False
    optional: bool = False
    parse: Callable[[str], Any] | None = None
    check: Callable[[Any], None] | None = None

    @property
    def flag(self) -> str:
        """The command-line flag (``logit_tau`` → ``--logit-tau``)."""
        return "--" + self.name.replace("_", "-")

    def add_to(self, parser: argparse.ArgumentParser) -> None:
        """Add this setting's flag to ``parser`` (bools as ``--x`` / ``--no-x``)."""
        shown = f"default: {self.default}" if self.default is not None else "default: chosen by the library"
        text = f"{self.help} ({shown})" if not self.required else self.help
        if self.kind is bool:
            parser.add_argument(self.flag, action=argparse.BooleanOptionalAction, default=self.default, help=text)
            return
        parser.add_argument(self.flag, type=self._flag_type(), default=self.default, choices=self.choices,
                            required=self.required, help=text)  # fmt: skip

    def _flag_type(self) -> Callable[[str], Any]:
        def convert(text: str) -> Any:
            try:
                return self.coerce(text)
            except DistillError as e:
                raise argparse.ArgumentTypeError(str(e)) from None

        convert.__name__ = self.kind.__name__  # argparse names the type in its messages
        return convert

    def coerce(self, value: Any) -> Any:
        """Return ``value`` (text from a flag or a pipeline, or a value) as this setting's kind; ``""`` → ``None``."""
        if value is None or (self.optional and value == ""):
            return None
        if isinstance(value, list | tuple) and self.kind is str:  # layers=[15, 18, 21] from YAML or JSON
            value = ",".join(map(str, value))
        if self.parse is not None:
            return self.parse(value)
        if self.kind is bool and isinstance(value, str):
            if value.strip().lower() not in {"true", "false"}:
                raise DistillError(f"{self.name} must be true or false, got {value!r}")
            return value.strip().lower() == "true"
        result = self._typed(value)
        if isinstance(result, float) and not math.isfinite(result):  # NaN passes every comparison check after this
            raise DistillError(f"{self.name} must be a finite number, got {value!r}")
        if self.choices:  # the library's own check (DistillConfig's): any case, one refusal naming the choices
            result = choose(self.name, result, self.choices)
        if self.check is not None:
            self.check(result)
        return result

    def _typed(self, value: Any) -> Any:
        """Return ``value`` as this setting's kind (text bools aside), refusing what would change it: ``2.5`` as int."""
        wrong = DistillError(f"{self.name} must be {self.kind.__name__}, got {value!r}")
        if isinstance(value, bool) and self.kind is not bool:  # True is an int to Python, not a number to a user
            raise wrong
        if isinstance(value, self.kind):
            return value
        if self.kind is int and isinstance(value, str):  # a pipeline's struct holds numbers as doubles: "2.0"
            try:
                value = float(value)
            except ValueError:
                raise wrong from None
        try:
            result = self.kind(value)
        except (TypeError, ValueError, OverflowError):  # int("inf") overflows
            raise wrong from None
        if isinstance(value, float) and result != value:  # int(2.5) would silently be 2
            raise wrong
        return result

    def to_args(self, value: Any) -> list[str]:
        """Return the command-line words that set ``value`` (nothing for ``None``)."""
        if value is None:
            return []
        if self.kind is bool:
            return [self.flag if value else "--no-" + self.flag[2:]]
        text = ",".join(map(str, value)) if isinstance(value, list | tuple) else str(value)
        return [self.flag, text]

    @property
    def pipeline_type(self) -> type:
        """The pipeline parameter's type: the kind, or ``str`` for optional and free-text settings."""
        return str if self.optional or self.parse is not None else self.kind

    def pipeline_value(self, value: Any) -> Any:
        """Return a typed ``value`` as the pipeline parameter carries it (text for :attr:`pipeline_type` ``str``)."""
        if self.pipeline_type is not str:
            return value
        return "" if value is None else ",".join(map(str, value)) if isinstance(value, list | tuple) else str(value)

    @property
    def pipeline_default(self) -> Any:
        """The pipeline parameter's default: the library default, ``""`` for ``None``."""
        return "" if self.default is None else self.default


def kd_options() -> tuple[Option, ...]:
    """Return the KD settings: every :class:`DistillConfig` field but ``teacher`` (an input) and ``extra``."""
    out = []
    for f in fields(DistillConfig):
        if f.name in {"teacher", "extra"}:
            continue
        meta = f.metadata
        if "kind" not in meta:
            raise TypeError(f"DistillConfig.{f.name} declares no kind/help in its field metadata")
        default = f.default if f.default is not MISSING else None
        out.append(Option(f.name, meta["kind"], default, meta["help"], meta.get("choices"),
                          optional=meta.get("optional", False), parse=meta.get("parse")))  # fmt: skip
    return tuple(out)


KD: tuple[Option, ...] = kd_options()
KD_NAMES = frozenset(o.name for o in KD)

#: A step's run id and name are one segment of its S3 keys and local folders (``runs/<run_id>/<name>/``): checked
#: where declared (:func:`distill.paths.check_name`), so the CLI, the TrainJob and the pipeline all refuse ``../x``.
_RUN_ID = partial(check_name, what="run_id")
_NAME = partial(check_name, what="name")
#: The training options of every entry point — :func:`distill.engine.api.train` / :func:`~distill.engine.api.distill`
#: keywords, CLI flags, step options, the components' ``training`` mapping, the pipeline's parameters and the TrainJob's
#: command line — declared once. The defaults are Ultralytics' own ``default.yaml`` values, written out so this module
#: stays free of torch (a test checks they still match); ``None``: not passed, Ultralytics' default applies.
TRAINING: tuple[Option, ...] = (
    Option("epochs", int, 100, "training epochs"),
    Option("imgsz", int, 640, "square training image size", check=lambda v: check_training(imgsz=v)),
    Option("batch", int, 16, "batch size, over all GPUs (-1: AutoBatch)", check=lambda v: check_training(batch=v)),
    Option(
        "device",
        str,
        None,
        "cpu, 0, 0,1 ...; empty: every visible GPU in a pipeline step (the first from the CLI and API), else the CPU",
        optional=True,
    ),
    Option("seed", int, 0, "random seed (Ultralytics trains deterministically)"),
    Option("workers", int, None, "data-loader workers per process (default: Ultralytics' 8)", optional=True),
)
TRAINING_NAMES = frozenset(o.name for o in TRAINING)
#: The MLflow tracking options of every step that logs (CLI ``--experiment`` / ``--tracking-uri``).
TRACKING: tuple[Option, ...] = (
    Option(
        "experiment", str, None, "MLflow experiment (default: $MLFLOW_EXPERIMENT_NAME or yolo-distill)", optional=True
    ),  # fmt: skip
    Option("tracking_uri", str, None, "MLflow tracking URI (default: $MLFLOW_TRACKING_URI)", optional=True),
)
#: The pipeline run a step belongs to: its outputs go under ``runs/<run_id>/`` and it is that run's MLflow child.
RUN_ID = Option("run_id", str, help="the pipeline run this step belongs to", required=True, parse=_RUN_ID)
#: Where a step writes in S3 (its outputs under ``<prefix>/runs/<run_id>/<name>/``).
PREFIX = Option("prefix", str, None, "s3://bucket/prefix (default: $YOLO_DISTILL_S3_PREFIX)", optional=True)
#: The options of the ``train`` and ``distill`` steps besides the KD settings (CLI ``yolo-distill step ...``).
_STEP_TRAINING = (
    Option("data", str, help="dataset URI from prepare-data (or a local data.yaml)", required=True),
    *TRAINING,
    Option("checkpoint_every", int, 1, "upload a resumable checkpoint every N epochs"),
    RUN_ID,
    PREFIX,
    *TRACKING,
)


def training(args: Mapping[str, Any], names: Iterable[str] = TRAINING_NAMES) -> dict[str, Any]:
    """Return ``args`` with each training option of ``names`` present: a missing or ``None`` one at its default.

    Options whose default is ``None`` (``device``, ``workers``) stay out unless given, as do ``None`` values of any
    other argument (Ultralytics' default applies). The API, the steps and the TrainJob fill their runs' arguments
    here, so each default is the one declared in :data:`TRAINING`.
    """
    wanted = set(names)
    defaults = {o.name: o.default for o in TRAINING if o.name in wanted and o.default is not None}
    return {**defaults, **{k: v for k, v in args.items() if v is not None}}


#: The training options the evaluate step validates the models with (the image size, batch and device): the keys of
#: the evaluate component's ``training``, as the pipeline hands them over; the others are training's alone.
EVALUATE_TRAINING: tuple[str, ...] = ("imgsz", "batch", "device")


def coerce_training(given: Mapping[str, Any], names: Iterable[str] = TRAINING_NAMES) -> dict[str, Any]:
    """Return training options from a pipeline (numbers may arrive as ``2.0``, ``""`` for none) typed and checked.

    Only the options of ``names`` are taken (e.g. :data:`EVALUATE_TRAINING`): another one is refused, naming it.
    """
    wanted = set(names)
    return _coerce((o for o in TRAINING if o.name in wanted), given, "training option")


def _coerce(declared: Iterable[Option], given: Mapping[str, Any], what: str) -> dict[str, Any]:
    """Return ``given`` typed by its ``declared`` options; a name not declared is refused, naming it (``what``)."""
    options = {o.name: o for o in declared}
    unknown = sorted(set(given) - set(options))
    if unknown:
        raise DistillError(f"unknown {what}(s): {', '.join(unknown)}")
    return {k: options[k].coerce(v) for k, v in given.items()}


#: The unlabelled pool of a distillation (issue 21), for the engine's ``distill`` and the distill step alike.
UNLABELED = Option(
    "unlabeled",
    str,
    None,
    "unlabelled images: prepare-data's pool URI (s3://.../pools/<hash>) or a folder; the teacher pseudo-labels them "
    "and the student trains on them too",
    optional=True,
)


def _check_min_gain(value: float) -> None:
    """Refuse a negative ``min_gain``: a gate that lets a worse model through is no gate."""
    if not value >= 0:
        raise DistillError(f"min_gain must be >= 0 (mAP as a fraction: 0.01 is one point), got {value}")


def _check_level(value: float) -> None:
    """Refuse a ``gate_level`` outside (0, 1): a confidence level, its interval's ``z`` finite and positive."""
    if not 0 < value < 1:
        raise DistillError(f"gate_level must be between 0 and 1 (e.g. 0.9), got {value}")


#: The promotion gate (issue 24): evaluate's decision to go on to register (distilled over baseline) and register's
#: decision to move ``champion`` (challenger over champion) follow the same rule, with these settings — the CLI flags
#: of ``step evaluate`` and ``step register``, the keys of the evaluate and register components' ``gate``, and the
#: pipeline's parameters of the same names.
GATE: tuple[Option, ...] = (
    Option(
        "min_gain",
        float,
        0.0,
        "minimum gain of the primary metric (a fraction: 0.01 is one mAP point) over the "
        "baseline to register and over the champion to promote",
        check=_check_min_gain,
    ),  # fmt: skip
    Option(
        "gate",
        str,
        "ci",
        "how a gain is judged: 'ci' - the lower bound of its confidence interval (paired "
        "bootstrap over test images, widened by each run's own run-to-run noise) must reach min_gain; 'point' - "
        "the difference itself must",
        choices=("ci", "point"),
    ),  # fmt: skip
    Option(
        "gate_level",
        float,
        0.9,
        "two-sided confidence level of the gate's interval (between 0 and 1)",
        check=_check_level,
    ),
)


def coerce_gate(given: Mapping[str, Any]) -> dict[str, Any]:
    """Return every gate setting from ``given`` (a missing one at its default), typed by its declaration and checked.

    Called by every layer that takes them (the evaluate and register steps and components, the pipeline's arguments):
    numbers may arrive from a pipeline as text or doubles; a bad value is one error naming it.
    """
    return {o.name: o.default for o in GATE} | _coerce(GATE, given, "gate setting")


STEP_OPTIONS: dict[str, tuple[Option, ...]] = {
    "train": (
        Option("model", str, help="model .yaml or weights URI (local or s3://)", required=True),
        Option("name", str, help="step name, e.g. teacher or student", required=True, parse=_NAME),
        *_STEP_TRAINING,
    ),
    "distill": (
        Option("teacher", str, help="teacher weights URI (local or s3://)", required=True),
        Option("student", str, help="student .yaml or weights URI", required=True),
        Option("name", str, "distill", "step name", parse=_NAME),
        UNLABELED,
        *KD,
        *_STEP_TRAINING,
    ),
}


def values(options: Iterable[Option], namespace: argparse.Namespace) -> dict[str, Any]:
    """Return ``{name: value}`` of ``options`` from parsed arguments."""
    return {o.name: getattr(namespace, o.name) for o in options}


def split_kd(settings: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split keyword settings into the KD ones and the rest (Ultralytics train arguments)."""
    kd = {k: v for k, v in settings.items() if k in KD_NAMES}
    return kd, {k: v for k, v in settings.items() if k not in KD_NAMES}


def coerce_kd(kd: dict[str, Any]) -> dict[str, Any]:
    """Return KD settings from a pipeline (values may arrive as text: ``"true"``, ``"0.5"``, ``""``) typed."""
    return _coerce(KD, kd, "distillation setting")


def command_line(step: str, **kwargs: Any) -> list[str]:
    """Return the ``yolo-distill step <step>`` arguments for keyword arguments of the step function.

    Declared options become flags (``logit=False`` → ``--no-logit``; ``None`` is left out); any other keyword is an
    Ultralytics ``key=value`` argument.

    Examples:
        >>> command_line("train", data="s3://b/d", model="yolov8n.yaml", name="s", run_id="r", epochs=3, lr0=0.01)
        ['train', '--data', 's3://b/d', '--model', 'yolov8n.yaml', '--name', 's', '--run-id', 'r', '--epochs', '3', 'lr0=0.01']
    """  # noqa: E501
    options = {o.name: o for o in STEP_OPTIONS[step]}
    args, extra = [step], []
    for key, value in kwargs.items():
        if key in options:
            args += options[key].to_args(value)
        elif value is not None:
            extra.append(f"{key}={json.dumps(value) if isinstance(value, bool | list | dict) else value}")
    return args + extra


def pipeline_arguments(params: dict[str, Any]) -> dict[str, Any]:
    """Check a run's pipeline arguments before any pod starts; return them as the pipeline's parameters type them.

    The KD settings are validated as :class:`DistillConfig` validates them and ``train_args`` with Ultralytics' rules
    (:func:`check_train_args`): bad input is one error naming the setting, not a failed pod minutes later.
    """
    out, kd = dict(params), {}
    if "run_id" in out:  # given instead of the run's own id: a folder and key segment, checked as the step checks it
        check_name(out["run_id"], "run_id")
    for option in KD:
        if option.name in out:
            kd[option.name] = option.coerce(out[option.name])
            out[option.name] = option.pipeline_value(kd[option.name])
    config = DistillConfig(teacher="teacher.pt", **kd)
    gate = coerce_gate({o.name: out[o.name] for o in GATE if o.name in out})
    out.update({o.name: o.pipeline_value(gate[o.name]) for o in GATE if o.name in out})
    out.update(_training_numbers(out))
    if "student_epochs" in out:
        config.check_run(out["student_epochs"], bool(out.get("unlabeled_source")))
    if "train_args" in out:
        out["train_args"] = check_train_args(out["train_args"])
    return out


#: The pipeline's training parameters, each with the training option it sets: the teacher's and the students' epochs
#: are two parameters of the one ``epochs`` option; every other option is a parameter of its own name.
PIPELINE_TRAINING: dict[str, Option] = {
    **{f"{who}_epochs": o for who in ("teacher", "student") for o in TRAINING if o.name == "epochs"},
    **{o.name: o for o in TRAINING if o.name != "epochs"},
}


def _training_numbers(params: dict[str, Any]) -> dict[str, Any]:
    """Return the training parameters among a run's ``params``, typed and checked as the steps check them.

    Each by its option (:data:`TRAINING`: typed, finite, ``imgsz`` and ``batch`` in range), then ``epochs`` and
    ``seed`` by Ultralytics' own rules (:func:`distill.config.check_arguments`), the error naming the parameter; each
    returned as the pipeline parameter carries it.
    """
    out = {}
    for name, option in PIPELINE_TRAINING.items():
        if name not in params:
            continue
        value = option.coerce(params[name])
        if option.name in {"epochs", "seed"}:
            try:
                check_arguments(**{option.name: value})
            except DistillError as e:
                raise DistillError(f"{name}: {e}") from None
        out[name] = option.pipeline_value(value)
    return out


def check_train_args(train_args: Any) -> dict[str, Any]:
    """Check a ``train_args`` mapping with Ultralytics' own rules; return it. One error names the bad key or value.

    Settings that have their own parameter (``epochs``, the KD settings, ...) are refused here: one way to set each.
    """
    from difflib import get_close_matches

    from ultralytics.utils import DEFAULT_CFG_DICT

    if isinstance(train_args, str):
        try:
            train_args = json.loads(train_args or "{}")
        except json.JSONDecodeError as e:
            raise DistillError(f"train_args is not a JSON object: {e}") from None
    if not isinstance(train_args, dict):
        raise DistillError(f"train_args must be a mapping of Ultralytics train arguments, got {shown(train_args, 60)}")
    own = sorted(set(train_args) & (TRAINING_NAMES | KD_NAMES | {"model", "data", "name"}))
    if own:
        raise DistillError(f"train_args: '{own[0]}' has its own pipeline parameter; set it there")
    for key in train_args:
        if key not in DEFAULT_CFG_DICT:
            close = get_close_matches(str(key), list(DEFAULT_CFG_DICT), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise DistillError(f"train_args: '{key}' is not an Ultralytics train argument{hint}")
    check_arguments(**train_args)
    return train_args
