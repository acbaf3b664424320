"""Command line: ``yolo-distill train`` and ``yolo-distill distill``, thin wrappers over :mod:`distill.api`.

Extra ``key=value`` arguments pass through to Ultralytics (``lr0=0.01 plots=False``). Bad input prints one line,
``error: ...``, and exits with status 2; a failed run exits with status 1.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import yaml

from .config import DEFAULT_FEATURE_WEIGHTS, FEATURE_LOSSES, SCHEDULES, DistillConfig
from .errors import DistillError


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """Parse ``key=value`` words into a dict, values typed as YAML scalars (``1e-3``, ``False``, ``[0, 1]``)."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise DistillError(f"extra argument '{pair}' is not key=value")
        out[key.strip()] = yaml.safe_load(value) if value else None
    return out


def _common(p: argparse.ArgumentParser, default_out: str) -> None:
    p.add_argument("--data", help="dataset yaml (local file)")
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--imgsz", type=int, default=640)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--device", default=None, help="cpu, 0, 0,1 ... (default: first GPU, else CPU)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=default_out, help=f"output folder (default: {default_out})")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="extra Ultralytics train arguments")


def build_parser() -> argparse.ArgumentParser:
    """Return the ``yolo-distill`` argument parser."""
    parser = argparse.ArgumentParser(prog="yolo-distill", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="plain training: a teacher or a baseline student")
    t.add_argument("--model", required=True, help="model .yaml (random init) or local .pt")
    _common(t, "runs/train")

    d = sub.add_parser("distill", help="distil a teacher into a student")
    d.add_argument("--student", help="student .yaml (random init) or local .pt")
    d.add_argument("--teacher", help="teacher .pt (or .yaml for tests)")
    d.add_argument("--loss", default="cwd", choices=FEATURE_LOSSES, help="feature loss (default: cwd)")
    d.add_argument("--logit", action=argparse.BooleanOptionalAction, default=True, help="logit loss (default: on)")
    d.add_argument("--layers", default="neck", help="neck | backbone-neck | I,J,K (default: neck)")
    d.add_argument("--teacher-layers", default=None, help="teacher layers if they differ from the student's")
    d.add_argument("--online", action="store_true", help="train the teacher jointly (default: offline, frozen)")
    d.add_argument(
        "--feat-weight",
        type=float,
        default=None,
        help=f"feature-loss weight (default per loss: {DEFAULT_FEATURE_WEIGHTS})",
    )
    d.add_argument("--logit-weight", type=float, default=0.25, help="logit-loss weight (default: 0.25)")
    d.add_argument("--tau", type=float, default=1.0, help="CWD temperature (default: 1.0)")
    d.add_argument("--mgd-ratio", type=float, default=0.65, help="MGD masked fraction (default: 0.65)")
    d.add_argument("--mgd-alpha", type=float, default=2e-5, help="MGD loss scale (default: 2e-5)")
    d.add_argument("--schedule", default="constant", choices=SCHEDULES, help="KD weight over epochs")
    d.add_argument("--distill-off-epochs", type=int, default=0, help="switch KD off for the last N epochs")
    d.add_argument("--resume", default=None, help="continue an interrupted run from its weights/last.pt")
    _common(d, "runs/distill")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; return the process exit status."""
    args = build_parser().parse_args(argv)
    try:
        from . import api  # imported here so `--help` stays fast

        extra = parse_overrides(args.overrides)
        common = dict(
            epochs=args.epochs, imgsz=args.imgsz, batch=args.batch, device=args.device, seed=args.seed, out=args.out
        )
        if args.command == "train":
            if not args.data:
                raise DistillError("--data is required")
            result = api.train(args.data, args.model, **common, **extra)
        elif args.resume:
            result = api.distill(args.data, None, resume=args.resume, device=args.device, **extra)
        else:
            for flag in ("data", "student", "teacher"):
                if not getattr(args, flag):
                    raise DistillError(f"--{flag} is required")
            config = DistillConfig(
                teacher=args.teacher,
                loss=args.loss,
                logit=args.logit,
                layers=args.layers,
                teacher_layers=args.teacher_layers,
                online=args.online,
                feat_weight=args.feat_weight,
                logit_weight=args.logit_weight,
                tau=args.tau,
                mgd_ratio=args.mgd_ratio,
                mgd_alpha=args.mgd_alpha,
                schedule=args.schedule,
                distill_off_epochs=args.distill_off_epochs,
            )
            result = api.distill(args.data, args.student, config, **common, **extra)
    except DistillError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (RuntimeError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(json.dumps(result.to_dict()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
