"""Python API: :func:`train` and :func:`distill`, the functions the CLI, the pipeline steps and the tests all call.

:func:`train` trains a plain model (the teacher, or the baseline student); :func:`distill` distils a teacher into a
student.

Both run Ultralytics' own task trainers in-process and write Ultralytics' layout into ``out``:
``weights/best.pt``, ``weights/last.pt``, ``results.csv``, ``args.yaml`` — plus ``distill.json`` (the resolved
distillation plan) and, in online mode, ``weights/teacher.pt``.

A refused run (:class:`DistillError`, also when the trainer refuses it after it began) prints only its error and
leaves ``out`` as it found it: a folder the run created is removed, an existing one gets back the files
Ultralytics' trainer writes or deletes before its checks end (``args.yaml``, ``results.csv``).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ultralytics.nn.tasks import guess_model_task, yaml_model_load
from ultralytics.utils import LOGGER

from ..config import DistillConfig, check_arguments, check_training
from ..errors import DistillError
from ..offline import configure
from ..settings import training
from ..yaml_files import read_yaml
from .model import KDModel, load_weights, read_checkpoint
from .rounds import ROUND, needs_rounds, run_rounds
from .trainer import DISTILL_TRAINERS, PLAIN_TRAINERS, TEACHER_WEIGHTS, DistillCallbacks, DistillTrainerMixin, held_logs

if TYPE_CHECKING:
    from .pool_data import PoolData


@dataclass
class RunResult:
    """What a training or distillation run wrote, and its final validation metrics."""

    save_dir: Path
    best: Path
    last: Path
    results_csv: Path
    metrics: dict[str, float] = field(default_factory=dict)
    distill_json: Path | None = None
    teacher: Path | None = None
    skipped_images: int | None = None  # training images Ultralytics' loader refused as corrupt
    rank: int = -1  # this process's global rank under torchrun (-1: a single-process run)
    world_size: int = 1  # ranks that trained together (over all nodes)
    pool: dict[str, Any] | None = None  # with an unlabelled pool: what trained (pool_data.PoolData.to_dict)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable summary."""
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in self.__dict__.items()}


def model_task(model: str) -> str:
    """Return the task of a model ``.yaml`` (path or Ultralytics built-in name) or a local ``.pt`` checkpoint.

    Raises:
        DistillError: The file is missing, is neither ``.yaml`` nor ``.pt``, or is not a detect/segment/pose model.
    """
    suffix = Path(model).suffix.lower()
    if suffix in {".yaml", ".yml"}:
        if Path(model).is_file():  # a user's file (not a built-in name): bounded before Ultralytics reads it
            read_yaml(model, f"model yaml '{model}'")
        try:
            task = guess_model_task(yaml_model_load(model))
        except FileNotFoundError:
            raise DistillError(
                f"model yaml '{model}' not found (a path, or an Ultralytics name like yolov8n.yaml)"
            ) from None
    elif suffix == ".pt":
        if not Path(model).is_file():
            raise DistillError(f"model weights '{model}' not found (weights are never downloaded: give a local .pt)")
        weights = load_weights(model, "model")
        task = getattr(weights, "task", None) or guess_model_task(weights)
    else:
        raise DistillError(f"model '{model}' must be a .yaml (random init) or a local .pt checkpoint")
    if task not in PLAIN_TRAINERS:
        raise DistillError(f"model '{model}' is a {task} model; supported tasks: {', '.join(PLAIN_TRAINERS)}")
    return task


def _check_data(data: str | Path) -> str:
    """Check a dataset yaml before any model is built or anything written, as prepare-data checks a YOLO source.

    It exists, parses with the bounded YAML loader (an alias bomb is refused before Ultralytics reads it), its train
    and val splits name folders or ``.txt`` lists holding images, and its labels pass Ultralytics' verifier
    (:func:`distill.data.dataset_files.check_dataset`).
    """
    path = Path(data)
    if path.suffix.lower() not in {".yaml", ".yml"}:
        raise DistillError(f"data '{data}' must be a dataset .yaml file")
    if not path.is_file():
        raise DistillError(f"data '{data}' not found (datasets are never downloaded: give a local data.yaml)")
    from ..data.dataset_files import check_dataset

    check_dataset(data)
    return str(path.resolve())


#: What a resumed run takes from its checkpoint, whatever the call says (``device`` and the rest may change).
FROM_CHECKPOINT = frozenset({"epochs", "imgsz", "batch", "seed"})


def _run_args(train_args: dict[str, Any], resume: str | Path | None) -> dict[str, Any]:
    """Return a run's train arguments, refused before anything is read, built or written (one error line).

    The training options at their declared defaults (:func:`distill.settings.training`; on resume those the run
    takes from its checkpoint are left out), then checked: a GPU that is not visible
    (:func:`distill.devices.check_device`), an ``imgsz`` or ``batch`` out of range
    (:func:`distill.config.check_training`), and ``epochs``, ``seed`` or any other train argument by Ultralytics'
    own rules (:func:`distill.config.check_arguments`). The CLI, the pipeline steps and Python callers all come
    through here.
    """
    from ..devices import check_device

    args = training(train_args)
    if resume is not None:
        args = {k: v for k, v in args.items() if k not in FROM_CHECKPOINT}
    check_device(args.get("device"))
    check_training(imgsz=args.get("imgsz"), batch=args.get("batch"))
    check_arguments(**{k: v for k, v in args.items() if k not in {"model", "data", "task"}})
    return args


def _overrides(out: str | Path, **kwargs: Any) -> dict[str, Any]:
    out = Path(out).resolve()
    extra = {k: v for k, v in kwargs.items() if v is not None}
    check_arguments(**{k: v for k, v in extra.items() if k not in {"model", "data", "task"}})
    return {"project": str(out.parent), "name": out.name, "exist_ok": True, **extra}


def _run(trainer_cls: type, overrides: dict[str, Any], callbacks: dict[str, list] | None) -> Any:
    """Construct and run an Ultralytics trainer, turning its argument errors into :class:`DistillError`.

    Until the run is accepted — the trainer is built, and for distillation the teacher/student pair validated —
    Ultralytics' console output is held back and the output folder can be put back (:class:`_OutputFolder`).
    """
    from ultralytics.utils import callbacks as ul_callbacks

    cbs = ul_callbacks.get_default_callbacks()
    for event, handlers in (callbacks or {}).items():
        cbs[event].extend(handlers)
    with held_logs() as held, _OutputFolder.of(overrides).restored_on_refusal():
        try:
            trainer = trainer_cls(overrides=overrides, _callbacks=cbs)
        except SyntaxError as e:  # Ultralytics' message for unknown arguments, followed by its whole CLI help
            lines = [line.strip() for line in str(e).splitlines() if "not a valid YOLO argument" in line]
            raise DistillError(" ".join(lines) or str(e).strip().splitlines()[0]) from None
        if trainer.ddp or not isinstance(trainer, DistillTrainerMixin):
            held.show()  # accepted (a distillation trainer releases it once the pair is validated)
        trainer.train()
    return trainer


class _OutputFolder:
    """A run's output folder as it was before the run, so that a refused run can leave it as it found it.

    Ultralytics' trainer creates the folder and ``weights/``, writes ``args.yaml`` and deletes ``results.csv``
    while it is constructed, before the checks that may still refuse the run (the teacher, the layer pairs).
    """

    TOUCHED = ("args.yaml", "results.csv")

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.created: Path | None = None  # the topmost folder that did not exist yet: all of it would be this run's
        self.saved: dict[str, bytes | None] = {}
        self.had_weights = True
        if path is None:
            return
        missing = [p for p in (path, *path.parents) if not p.exists()]
        self.created = missing[-1] if missing else None
        if self.created is None:
            self.saved = {n: (path / n).read_bytes() if (path / n).is_file() else None for n in self.TOUCHED}
            self.had_weights = (path / "weights").is_dir()

    @classmethod
    def of(cls, overrides: dict[str, Any]) -> _OutputFolder:
        """Return the folder of a run with these trainer ``overrides`` (``None``: a resume in place)."""
        if overrides.get("save_dir"):
            return cls(Path(overrides["save_dir"]).resolve())
        if overrides.get("project") and overrides.get("name"):
            return cls((Path(overrides["project"]) / overrides["name"]).resolve())
        return cls(None)

    @contextmanager
    def restored_on_refusal(self) -> Iterator[None]:
        """On a :class:`DistillError` in the block, put the folder back (a checkpoint the run wrote stays)."""
        try:
            yield
        except DistillError:
            self.restore()
            raise

    def restore(self) -> None:
        """Remove what the run created, or write back the files it changed in a folder that existed."""
        if self.path is None:
            return
        if self.created is not None:
            if not (self.path / "weights" / "last.pt").is_file():  # refused before its first checkpoint
                shutil.rmtree(self.created, ignore_errors=True)
            return
        for name in self.TOUCHED:
            before, path = self.saved[name], self.path / name
            if before is None:
                path.unlink(missing_ok=True)
            else:
                path.write_bytes(before)
        weights = self.path / "weights"
        if not self.had_weights and weights.is_dir() and not any(weights.iterdir()):
            weights.rmdir()


def _result(trainer: Any) -> RunResult:
    wdir = Path(trainer.wdir)
    metrics = {k: float(v) for k, v in (trainer.metrics or {}).items() if isinstance(v, int | float)}
    distill_json = Path(trainer.save_dir) / "distill.json"
    teacher = wdir / TEACHER_WEIGHTS
    return RunResult(
        save_dir=Path(trainer.save_dir),
        best=wdir / "best.pt",
        last=wdir / "last.pt",
        results_csv=Path(trainer.csv),
        metrics=metrics,
        distill_json=distill_json if distill_json.exists() else None,
        teacher=teacher if teacher.exists() else None,
        skipped_images=_skipped_images(trainer),
        rank=trainer.launch.rank,
        world_size=max(trainer.launch.world_size, trainer.world_size or 1),
    )


def _skipped_images(trainer: Any) -> int | None:
    """How many training images Ultralytics' dataset refused (corrupt), or ``None`` when it is not known.

    Its loader keeps one label file per image found and narrows ``im_files`` to the images that passed its checks.
    """
    dataset = getattr(getattr(trainer, "train_loader", None), "dataset", None)
    found, kept = getattr(dataset, "label_files", None), getattr(dataset, "im_files", None)
    return len(found) - len(kept) if found is not None and kept is not None else None


def train(
    data: str | Path,
    model: str,
    *,
    out: str | Path | None = None,
    callbacks: dict[str, list] | None = None,
    resume: str | Path | None = None,
    **train_args: Any,
) -> RunResult:
    """Train a model without distillation (the teacher, or the baseline student).

    Args:
        data: Local dataset yaml.
        model: Model ``.yaml`` (random init) or local ``.pt`` (fine-tune).
        out: Output folder (``weights/``, ``results.csv``, ...); default ``runs/train``, or in place on resume.
        callbacks: Extra Ultralytics callbacks ``{event: [fn(trainer), ...]}`` (progress, tracking).
        resume: An interrupted run's ``last.pt``: continue it (``data``/``out`` may point to new locations).
        **train_args: The training options (:data:`distill.settings.TRAINING`: ``epochs``, ``imgsz``, ``batch``,
            ``device``, ``seed``, ``workers``; missing ones at their declared default) and any other Ultralytics
            train argument (``lr0=0.01``, ``plots=False``, ...). On resume only ``device`` and other Ultralytics
            arguments count: the run goes on as the checkpoint says.

    Configures Ultralytics first (:func:`distill.configure`: offline, integrations off; a no-op once done), so a
    Python caller needs no setup; ``from distill import train`` has already configured it before importing it.

    Examples:
        >>> from distill import train
        >>> run = train("coco8/data.yaml", "yolov8s.yaml", epochs=1, imgsz=64, out="runs/teacher")  # doctest: +SKIP
        >>> run.best  # doctest: +SKIP
        PosixPath('.../runs/teacher/weights/best.pt')
    """
    configure()
    run = _run_args(train_args, resume)
    if resume is not None:
        path = _checkpoint(resume)
        ckpt = read_checkpoint(path, "resume")[1]
        task = ckpt["train_args"]["task"]
        return _result(_run(PLAIN_TRAINERS[task], _resume_overrides(path, ckpt, data, out, run), callbacks))
    task = model_task(model)
    args = _overrides(out or "runs/train", model=model, data=_check_data(data), task=task, **run)
    return _result(_run(PLAIN_TRAINERS[task], args, callbacks))


def distill(
    data: str | Path | None,
    student: str | None,
    config: DistillConfig | None = None,
    *,
    out: str | Path | None = None,
    resume: str | Path | None = None,
    callbacks: dict[str, list] | None = None,
    unlabeled: str | Path | None = None,
    pool_hash: str | None = None,
    **train_args: Any,
) -> RunResult:
    """Distil ``config.teacher`` into ``student`` on ``data`` (and, given ``unlabeled``, on an unlabelled pool).

    Args:
        data: Local dataset yaml (ignored on resume unless given).
        student: Student ``.yaml`` (random init) or local ``.pt``.
        config: What to distil (teacher, loss, layers, weights, mode, schedule).
        out: Output folder; default ``runs/distill``, or in place on resume.
        resume: An interrupted run's ``weights/last.pt``: continue it (config, adapters and generators restored;
            ``config`` may then give the teacher's current location, ``out`` a new output folder).
        callbacks: Extra Ultralytics callbacks ``{event: [fn(trainer), ...]}`` (progress, tracking).
        unlabeled: A folder of unlabelled images: the teacher pseudo-labels them (``config.pseudo_conf``) and the
            student trains on them beside ``data``'s labelled images (:mod:`distill.engine.pool_data`; kept in
            ``<out>/pool``). On resume, given with ``data``, the same pool dataset is made again (cached).
        pool_hash: The pool's content hash when known (a prepare-data pool), the pseudo-labels' cache key.
        **train_args: The training options and any other Ultralytics train argument, as for :func:`train`.

    Configures Ultralytics first, like :func:`train` (idempotent).

    Examples:
        >>> from distill import DistillConfig, distill
        >>> cfg = DistillConfig(teacher="runs/teacher/weights/best.pt", loss="cwd")
        >>> run = distill("coco8/data.yaml", "yolov8n.yaml", cfg, epochs=1, imgsz=64)  # doctest: +SKIP
    """
    configure()
    run = _run_args(train_args, resume)
    labelling = training(train_args, ["batch"])  # the pool's pseudo-labelling: the run's batch, also on resume
    pool = PoolInput(unlabeled, pool_hash, run.get("device"), labelling["batch"]) if unlabeled is not None else None
    if resume is not None:
        return _resume(resume, data, out, config, callbacks, run, pool)
    if config is None:
        raise DistillError("distill needs a DistillConfig (at least the teacher)")
    if student is None:
        raise DistillError("distill needs a student model")
    if Path(config.teacher).is_file():  # an absolute path keeps resume working from any directory
        config = replace(config, teacher=str(Path(config.teacher).resolve()))
        if Path(config.teacher).suffix.lower() in {".yaml", ".yml"}:  # a test's random teacher: bounded, as the model
            read_yaml(config.teacher, f"teacher model yaml '{config.teacher}'")
    config.check_run(run["epochs"], pool is not None)
    task = model_task(student)
    resolved = config.for_pool(pool is not None, task)
    if pool is not None and config.distils and not resolved.distils:
        LOGGER.info("distill: with an unlabelled pool the student learns from the labels and the teacher's "
                    "pseudo-labels without the KD terms (label-then-train); --pool-kd adds them")  # fmt: skip
    config = resolved
    if pool is not None and needs_rounds(config):
        rounds = _local_rounds(data, student, pool, Path(out or "runs/distill"), {**run, "callbacks": callbacks})
        config = run_rounds(config, rounds)
    mixed = pool.make(_check_data(data), config, run["imgsz"], out or "runs/distill") if pool else None
    args = _overrides(out or "runs/distill", model=student, data=_check_data(mixed.data if mixed else data), task=task,
                      **run)  # fmt: skip
    result = _result(_run(DISTILL_TRAINERS[task], args, DistillCallbacks(config).attach(callbacks or {})))
    if mixed is None:
        return result
    return replace(result, pool={**mixed.to_dict(), "round": config.extra.get(ROUND, 1), "rounds": config.pool_rounds})


def _local_rounds(
    data: str | Path | None, student: str, pool: PoolInput, out: Path, run: dict[str, Any]
) -> Callable[[int, DistillConfig], str]:
    """Return the local round trainer for :func:`distill.engine.rounds.run_rounds`: round ``k`` in ``<out>-round<k>``.

    A round whose ``round.json`` is there, written for the same inputs (teacher bytes, data, student, settings),
    finished before and is reused; any other is trained (again).
    """

    def train_round(k: int, config: DistillConfig) -> str:
        folder = out.with_name(f"{out.name}-round{k}")
        done = folder / "round.json"
        asked = round_inputs(config, data, student, pool.images, run)
        earlier = json.loads(done.read_text()) if done.is_file() else {}
        if earlier.get("asked") == asked:
            return earlier["best"]
        LOGGER.info(f"distill: self-training round {k} of {config.pool_rounds} (teacher {config.teacher}) in {folder}")
        result = distill(data, student, config, out=folder, unlabeled=pool.images, pool_hash=pool.pool_hash, **run)
        record = {"round": k, "best": str(result.best), "metrics": result.metrics, "asked": asked}
        done.write_text(json.dumps(record, indent=2))
        return str(result.best)

    return train_round


def round_inputs(
    config: DistillConfig, data: str | Path | None, student: str, pool: str | Path, run: dict[str, Any]
) -> dict[str, Any]:
    """Return what makes a self-training round the round it is (``round.json``'s ``asked``), as plain JSON data.

    The round's config, its teacher's bytes (sha256), the data, student, pool and training arguments (``run``:
    :func:`distill`'s keywords; callbacks do not count).
    """
    from ..data.storage import sha256_file

    teacher = sha256_file(config.teacher) if Path(config.teacher).is_file() else config.teacher
    asked = {"config": config.to_dict(), "teacher_sha256": teacher, "data": str(data), "student": str(student),
             "pool": str(pool), **{name: value for name, value in run.items() if name != "callbacks"}}  # fmt: skip
    return json.loads(json.dumps(asked, default=str))


@dataclass(frozen=True)
class PoolInput:
    """An unlabelled pool given to :func:`distill`: where its images are, and how to label them."""

    images: str | Path
    pool_hash: str | None
    device: str | None
    batch: int

    def make(self, data: str | Path, config: DistillConfig, imgsz: int, out: str | Path) -> PoolData:
        """Pseudo-label the pool and write the labelled + pool dataset under ``<out>/pool`` (one folder per rank)."""
        from ..launch import current
        from .pool_data import with_pool

        launch = current()
        folder = Path(out).resolve() / ("pool" if not launch.distributed else f"pool-rank{launch.rank}")
        return with_pool(data, config.teacher, self.images, folder, conf=config.pseudo_conf,
                         ratio=config.unlabeled_ratio, imgsz=imgsz, device=self.device, batch=self.batch,
                         pool_hash=self.pool_hash, keep_empty=config.keeps_empty)  # fmt: skip


def _checkpoint(path: str | Path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise DistillError(f"resume checkpoint '{path}' not found")
    return path.resolve()


def _resume_overrides(
    path: Path,
    ckpt: dict[str, Any],
    data: str | Path | None,
    out: str | Path | None,
    run: dict[str, Any],
) -> dict[str, Any]:
    """Build the trainer arguments of a resume, and put back the checkpoint's ``results.csv``.

    The checkpoint's own copy of ``results.csv`` (``train_results``) replaces the one in the output folder: on
    another machine there is none, and after a kill the local file can hold rows of an epoch the checkpoint has not.
    """
    args: dict[str, Any] = {"resume": str(path), **run}
    if data:
        args["data"] = _check_data(data)
    save_dir = Path(out).resolve() if out is not None else Path(ckpt["train_args"]["save_dir"])
    if out is not None:
        args["save_dir"] = str(save_dir)  # continue in a new place (e.g. another pod)
    results = ckpt.get("train_results")
    if results:
        import polars as pl

        save_dir.mkdir(parents=True, exist_ok=True)
        pl.DataFrame(results).write_csv(save_dir / "results.csv")
    return args


def _resume(
    last: str | Path,
    data: str | Path | None,
    out: str | Path | None,
    config: DistillConfig | None,
    callbacks: dict[str, list] | None,
    run: dict[str, Any],
    pool: PoolInput | None = None,
) -> RunResult:
    path = _checkpoint(last)
    weights, ckpt = read_checkpoint(path, "resume")
    if not isinstance(weights, KDModel):
        raise DistillError(
            f"'{last}' is not an interrupted distillation checkpoint (finished runs keep only the student); "
            "start a new run instead"
        )
    saved = DistillConfig.from_dict(weights.distill_config)
    if config is not None:  # the teacher may live elsewhere now; everything else comes from the checkpoint
        saved = replace(
            saved, teacher=str(Path(config.teacher).resolve()) if Path(config.teacher).is_file() else config.teacher
        )
    task = ckpt["train_args"]["task"]
    mixed = None
    if pool is not None and data:  # the pool dataset again (pseudo-labels cached), here: on another pod say
        args = ckpt["train_args"]
        mixed = pool.make(_check_data(data), saved, args["imgsz"], out or args["save_dir"])
        data = mixed.data
    args = _resume_overrides(path, ckpt, data, out, run)
    result = _result(_run(DISTILL_TRAINERS[task], args, DistillCallbacks(saved).attach(callbacks or {})))
    return replace(result, pool=mixed.to_dict()) if mixed else result
