"""Command line: ``yolo-distill train`` and ``yolo-distill distill``, thin wrappers over :mod:`distill.engine.api`.

Extra ``key=value`` arguments pass through to Ultralytics (``lr0=0.01 plots=False``). Every command follows the
scheme of :mod:`distill.errors`: bad input prints one line, ``error: ...``, and exits 2 (argument errors included,
without the usage text); a failure or an outage prints one line and exits 1.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from . import settings
from .config import DistillConfig
from .errors import DistillError, Failure, exit_status
from .yaml_files import parse_yaml


class Parser(argparse.ArgumentParser):
    """``argparse`` whose errors are one ``error:`` line (exit 2), not the usage text followed by the error."""

    def error(self, message: str):  # noqa: D102 (argparse's hook)
        sys.stderr.write(f"error: {message} (see `{self.prog} --help`)\n")
        sys.exit(2)


def fail(error: Failure) -> int:
    """Print ``error`` as the one ``error:`` line and return its exit status."""
    print(f"error: {error}", file=sys.stderr)
    return exit_status(error)


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """Parse ``key=value`` words into a dict, values typed as YAML scalars (``1e-3``, ``False``, ``[0, 1]``)."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise DistillError(f"extra argument '{pair}' is not key=value")
        out[key.strip()] = parse_yaml(value, f"extra argument '{pair:.60}'") if value else None
    return out


def _common(p: argparse.ArgumentParser, default_out: str) -> None:
    p.add_argument("--data", help="dataset yaml (local file)")
    for option in settings.TRAINING:  # one declaration: distill.settings
        option.add_to(p)
    p.add_argument("--out", default=None, help=f"output folder (default: {default_out}; in place on --resume)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="extra Ultralytics train arguments")


def _with_overrides(flags: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """Return the declared options' values (``flags``) with the extra ``key=value`` Ultralytics arguments.

    A declared option may come as ``key=value`` too (``workers=0``, as Ultralytics spells it), unless its flag also
    set another value: two values for one setting would leave the user guessing which one trained.
    """
    extra = parse_overrides(args.overrides)
    options = {o.name: o for o in settings.TRAINING}
    for key in sorted(set(extra) & set(flags)):
        default = options[key].default if key in options else None
        if flags[key] not in (default, extra[key]):
            raise DistillError(f"{key} is given twice: --{key.replace('_', '-')} {flags[key]} and {key}={extra[key]}")
    return {**flags, **extra}


def build_parser() -> argparse.ArgumentParser:
    """Return the ``yolo-distill`` argument parser."""
    parser = Parser(
        prog="yolo-distill",
        description="Knowledge distillation for Ultralytics YOLO (detect, segment, pose): train a teacher or a "
        "baseline, distil a student, run the Kubeflow pipeline steps, the pipeline and the local S3 + MLflow stack. "
        "Extra key=value arguments pass through to Ultralytics. Bad input exits 2 with one 'error:' line, a failure "
        "or an outage (S3, MLflow) exits 1 with one line.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="plain training: a teacher or a baseline student")
    t.add_argument("--model", required=True, help="model .yaml (random init) or local .pt")
    _common(t, "runs/train")

    d = sub.add_parser("distill", help="distil a teacher into a student")
    d.add_argument("--student", help="student .yaml (random init) or local .pt")
    d.add_argument("--teacher", help="teacher .pt (or .yaml for tests)")
    _kd_flags(d)
    settings.UNLABELED.add_to(d)
    d.add_argument("--resume", default=None, help="continue an interrupted run from its weights/last.pt")
    _common(d, "runs/distill")

    _step_parsers(sub.add_parser("step", help="pipeline steps (S3 artifacts, MLflow tracking)"))
    _pipeline_parsers(sub.add_parser("pipeline", help="the Kubeflow pipeline: compile, run locally with kfp.local"))
    _synth_flags(sub.add_parser("synth", help="write a deterministic synthetic dataset (shapes) in the YOLO layout"))
    _stack_flags(sub.add_parser("stack", help="local SeaweedFS S3 + MLflow servers on loopback"))
    return parser


def _pipeline_parsers(pipeline: argparse.ArgumentParser) -> None:
    """Add ``pipeline``'s actions: ``compile``, ``submit`` and ``schedule`` (to a cluster), ``run-local``.

    Each action is its own sub-parser so that ``yolo-distill pipeline ACTION --help`` lists only its flags;
    :func:`_pipeline` dispatches on ``args.action``.
    """
    pls = pipeline.add_subparsers(dest="action", required=True)
    c = pls.add_parser("compile", help="compile the pipeline to a YAML package")
    c.add_argument("-o", "--output", default="pipeline.yaml", help="output file (default: pipeline.yaml)")
    c.add_argument("--image", default=None, help="image, pinned by tag or digest (default: $YOLO_DISTILL_IMAGE)")
    c.add_argument("--sweep", action="store_true", help="the sweep variant: ParallelFor over {loss, layers}")
    c.add_argument("--node-selector", action="append", default=[], metavar="KEY=VALUE", help="training node label")
    c.add_argument("--s3-secret", default=None, help="Kubernetes secret with the S3 credentials/endpoint")
    c.add_argument("--mlflow-secret", default=None, help="Kubernetes secret with MLFLOW_TRACKING_URI")
    c.add_argument(
        "--cache-pvc", default=None, help="PVC mounted as every step's input cache (ReadWriteMany; default: none)"
    )

    sb = pls.add_parser("submit", help="submit one run to a KFP cluster")
    _remote_flags(sb)
    sb.add_argument("--run-name", default=None)
    sc = pls.add_parser("schedule", help="create, list or delete recurring runs")
    _remote_flags(sc)
    sc.add_argument("--cron", default=None, help='6-field cron, e.g. "0 0 3 * * 1" (Mondays 03:00)')
    sc.add_argument("--name", default="yolo-distill-weekly", help="recurring run name")
    sc.add_argument("--list", action="store_true", help="list recurring runs")
    sc.add_argument("--delete", default=None, metavar="ID", help="delete a recurring run")
    r = pls.add_parser("run-local", help="run the whole pipeline here with kfp.local against the local stack")
    r.add_argument("params", nargs="*", metavar="param=value", help="pipeline parameters (data_source=... ...)")
    r.add_argument("--stack-dir", default=None, help="local stack state folder")


def _remote_flags(p: argparse.ArgumentParser) -> None:
    """Add the flags ``pipeline submit`` and ``pipeline schedule`` share: which cluster, and what to send it.

    Declared once so both actions name the KFP API, namespace, token and package the same way (read by
    :func:`_remote`).
    """
    p.add_argument("--host", required=True, help="KFP API URL")
    p.add_argument("--namespace", default=None, help="Kubeflow profile namespace (multi-user)")
    p.add_argument("--experiment", default="yolo-distill", help="KFP experiment (default: yolo-distill)")
    p.add_argument("--token", default=None, help="bearer token (default: $KFP_TOKEN)")
    p.add_argument("--package", default=None, help="compiled pipeline YAML (default: compile now)")
    p.add_argument("--image", default=None, help="container image when compiling (default: $YOLO_DISTILL_IMAGE)")
    p.add_argument("params", nargs="*", metavar="param=value", help="pipeline parameters")


def _synth_flags(p: argparse.ArgumentParser) -> None:
    """Add ``synth``'s flags: where to write the dataset, its task, split sizes, image size and seed.

    The defaults make a dataset small enough for a CPU smoke run (48 train / 16 val images of 128 px).
    """
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--task", default="detect", choices=("detect", "segment", "pose"))
    p.add_argument("--images", type=int, default=48, help="training images (default: 48)")
    p.add_argument("--val", type=int, default=16, help="validation images (default: 16)")
    p.add_argument("--test", type=int, default=0, help="held-out test images (default: 0)")
    p.add_argument("--size", type=int, default=128, help="image size in pixels (default: 128)")
    p.add_argument("--seed", type=int, default=0)


def _stack_flags(p: argparse.ArgumentParser) -> None:
    """Add ``stack``'s flags: the action (``up``, ``down``, ``status``, ``env``) and the state folder.

    The action is positional (``yolo-distill stack up``), read by :func:`_stack`.
    """
    p.add_argument("action", choices=("up", "down", "status", "env"))
    p.add_argument("--dir", default=None, help="state folder (default: $YOLO_DISTILL_STACK_DIR or ./.stack)")


def _kd_flags(p: argparse.ArgumentParser) -> None:
    """Add a flag per KD setting, from their one declaration (:data:`distill.settings.KD`)."""
    for option in settings.KD:
        option.add_to(p)


def _step_parsers(step: argparse.ArgumentParser) -> None:
    sub = step.add_subparsers(dest="step", required=True)

    def tracked(p: argparse.ArgumentParser) -> None:
        for option in (settings.RUN_ID, settings.PREFIX, *settings.TRACKING):
            option.add_to(p)

    def declared(p: argparse.ArgumentParser, step: str) -> None:
        for option in settings.STEP_OPTIONS[step]:  # one declaration: distill.settings
            option.add_to(p)
        p.add_argument("overrides", nargs="*", metavar="key=value", help="extra Ultralytics train arguments")

    p = sub.add_parser("prepare-data", help="import, normalise, validate and publish a dataset")
    p.add_argument("--source", required=True, help="local folder or .zip, s3:// prefix or .zip")
    p.add_argument("--format", default="yolo", choices=("yolo", "coco", "voc"))
    p.add_argument("--classes", default=None, help="class names in index order, comma-separated")
    p.add_argument("--dest", default=None, help="s3://bucket/prefix (default: $YOLO_DISTILL_S3_PREFIX)")
    p.add_argument("--run-id", default=None, help="the pipeline run this step belongs to (tracked in MLflow)")
    p.add_argument(
        "--unlabeled",
        default=None,
        metavar="SOURCE",
        help="unlabelled images (folder, .zip, s3:// prefix or .zip) to publish beside the dataset as a pool",
    )

    declared(sub.add_parser("train", help="train a teacher or baseline student"), "train")
    declared(sub.add_parser("distill", help="distil a teacher into a student"), "distill")

    p = sub.add_parser("evaluate", help="compare teacher, baseline and distilled student on the same split")
    p.add_argument("--data", required=True, help="dataset URI")
    p.add_argument("--teacher", required=True, help="teacher weights URI")
    p.add_argument("--baseline", required=True, help="baseline student weights URI")
    p.add_argument("--distilled", required=True, help="distilled student weights URI")
    p.add_argument("--name", default="evaluate", help="step name (default: evaluate)")
    for option in settings.TRAINING:
        if option.name in settings.EVALUATE_TRAINING:  # the size and device the models are validated at
            option.add_to(p)
    p.add_argument("--latency-images", type=int, default=16, help="images timed per model (batch 1)")
    for option in settings.GATE:  # one declaration: distill.settings
        option.add_to(p)
    tracked(p)

    p = sub.add_parser("register", help="register the distilled student; promote to champion if it wins")
    p.add_argument("--model", required=True, help="distilled student weights URI (the one evaluated)")
    p.add_argument("--evaluation", required=True, help="the evaluate step's metrics.json URI (or its folder)")
    p.add_argument("--name", required=True, help="registered model name")
    for option in settings.GATE:
        option.add_to(p)
    p.add_argument(
        "--export",
        default="onnx",
        help="formats shipped with the version, each verified against PyTorch: onnx (always), torchscript, openvino",
    )
    for option in (settings.RUN_ID, *settings.TRACKING):
        option.add_to(p)


def _run_step(args: argparse.Namespace) -> dict[str, Any]:
    if args.step == "prepare-data":
        from .steps.prepare_data import prepare_data

        return prepare_data(args.source, args.format, dest=args.dest, classes=args.classes, run_id=args.run_id,
                            unlabeled=args.unlabeled)  # fmt: skip
    if args.step == "evaluate":
        from .steps.evaluate import evaluate

        return evaluate(
            args.data, args.teacher, args.baseline, args.distilled, run_id=args.run_id, prefix=args.prefix,
            name=args.name, imgsz=args.imgsz, batch=args.batch, device=args.device,
            latency_images=args.latency_images, experiment=args.experiment, tracking_uri=args.tracking_uri,
            **settings.values(settings.GATE, args),
        )  # fmt: skip
    if args.step == "register":
        from .steps.register import register

        return register(
            args.model, args.evaluation, args.name, run_id=args.run_id, experiment=args.experiment,
            tracking_uri=args.tracking_uri, export=args.export, **settings.values(settings.GATE, args),
        )  # fmt: skip
    from .steps import training

    given = settings.values(settings.STEP_OPTIONS[args.step], args)
    step = training.train if args.step == "train" else training.distill
    return step(**_with_overrides(given, args))


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; return the process exit status."""
    args = build_parser().parse_args(argv)
    if args.command in {"train", "distill", "step"} or (args.command == "pipeline" and args.action == "run-local"):
        from .offline import configure

        configure()  # before Ultralytics is imported, here or in run-local's tasks (they inherit the environment)
    if args.command == "stack":
        return _stack(args)
    if args.command == "pipeline":
        return _pipeline(args)
    if args.command == "synth":
        from .data.synthetic import generate

        path = generate(
            args.out, args.task, images=args.images, val=args.val, size=args.size, seed=args.seed, test=args.test
        )
        print(json.dumps({"data": str(path)}))
        return 0
    try:
        if args.command == "step":
            print(json.dumps(_run_step(args)))
            return 0
        from .engine import api  # imported here so `--help` stays fast

        run = _with_overrides(settings.values(settings.TRAINING, args), args)
        if args.command == "train":
            if not args.data:
                raise DistillError("--data is required")
            result = api.train(args.data, args.model, out=args.out, **run)
        elif args.resume:  # the run goes on as its checkpoint says: only --device and extra arguments count
            result = api.distill(args.data, None, resume=args.resume, out=args.out, **_pool(args), **run)
        else:
            for flag in ("data", "student", "teacher"):
                if not getattr(args, flag):
                    raise DistillError(f"--{flag} is required")
            config = DistillConfig(teacher=args.teacher, **settings.values(settings.KD, args))
            result = api.distill(args.data, args.student, config, out=args.out, **_pool(args), **run)
    except Failure as e:
        return fail(e)
    print(json.dumps(result.to_dict()))
    return 0


def _pool(args: argparse.Namespace) -> dict[str, Any]:
    from .steps.common import pool_arguments

    return pool_arguments(args.unlabeled)


def _pipeline(args: argparse.Namespace) -> int:
    try:
        if args.action == "compile":
            from .pipelines.pipeline import ClusterSettings, compile_pipeline, resolve_image

            settings = ClusterSettings(image=resolve_image(args.image))
            for key in ("s3_secret", "mlflow_secret", "cache_pvc"):
                if getattr(args, key):
                    setattr(settings, key, getattr(args, key))
            settings.node_selector = {k: str(v) for k, v in parse_overrides(args.node_selector).items()}
            path = compile_pipeline(args.output, settings, sweep=args.sweep)
            print(json.dumps({"pipeline": path, "image": settings.image, "sweep": args.sweep}))
            return 0
        if args.action in {"submit", "schedule"}:
            print(json.dumps(_remote(args)))
            return 0
        from .pipelines.local import print_table, run_local

        params = parse_overrides(args.params)
        if "data_source" not in params:
            raise DistillError("run-local needs data_source=FOLDER_OR_URI")
        summary = run_local(params, stack_dir=args.stack_dir)
    except Failure as e:
        return fail(e)
    print(print_table(summary), file=sys.stderr)
    print(json.dumps(summary))
    return 0


def _remote(args: argparse.Namespace) -> Any:
    from .pipelines import remote
    from .pipelines.pipeline import ClusterSettings, resolve_image

    params = parse_overrides(args.params)
    compiles = not args.package and (args.action == "submit" or not (args.list or args.delete))
    settings = ClusterSettings(image=resolve_image(args.image)) if compiles else None  # before any connection
    common = dict(namespace=args.namespace, token=args.token)
    if args.action == "submit":
        return remote.submit(args.host, params, experiment=args.experiment, package=args.package,
                             run_name=args.run_name, settings=settings, **common)  # fmt: skip
    if args.list:
        return remote.list_schedules(args.host, **common)
    if args.delete:
        return remote.delete_schedule(args.host, args.delete, **common)
    if not args.cron:
        raise DistillError("schedule needs --cron (or --list / --delete ID)")
    return remote.schedule(args.host, args.cron, params, name=args.name, experiment=args.experiment,
                           package=args.package, settings=settings, **common)  # fmt: skip


def _stack(args: argparse.Namespace) -> int:
    from . import stack

    try:
        if args.action == "env":
            print(stack.env_lines(args.dir))
            return 0
        result = {"up": stack.up, "down": stack.down, "status": stack.status}[args.action](args.dir)
    except Failure as e:
        return fail(e)
    if args.action == "up":
        print(f'stack ready; use it with: eval "$(yolo-distill stack env --dir {result["dir"]})"', file=sys.stderr)
    print(json.dumps(result))
    return 0 if args.action != "status" or result["running"] else 3


if __name__ == "__main__":
    sys.exit(main())
