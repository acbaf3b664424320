"""The KD model built through the real trainer seam: wiring, gradients, presets and up-front validation errors."""

from __future__ import annotations

import pickletools
import sys
import types
import zipfile
from copy import deepcopy

import pytest
import torch
import ultralytics.nn.tasks
from conftest import STUDENT, TASK_DATA, TEACHER
from ultralytics.utils import callbacks as ul_callbacks
from ultralytics.utils.torch_utils import ModelEMA

from distill import DistillConfig, DistillError
from distill.engine.connectors import ChannelAdapter
from distill.engine.model import KDModel, read_checkpoint
from distill.engine.trainer import DISTILL_TRAINERS, DistillCallbacks


def make_trainer(tmp_path, task: str, config: DistillConfig, student: str | None = None, data=None):
    """A real Ultralytics trainer of ours, set up as far as the KD seam (no training)."""
    cbs = DistillCallbacks(config).attach(ul_callbacks.get_default_callbacks())
    overrides = {
        "model": student or STUDENT[task],
        "data": str(data or TASK_DATA[task]),
        "imgsz": 64,
        "batch": 2,
        "device": "cpu",
        "plots": False,
        "project": str(tmp_path),
        "name": "run",
        "exist_ok": True,
        "workers": 0,
    }
    trainer = DISTILL_TRAINERS[task](overrides=overrides, _callbacks=cbs)
    trainer.model = trainer.get_model(cfg=overrides["model"], verbose=False)
    trainer.set_model_attributes()
    return trainer


def real_batch(trainer, n: int = 2) -> dict:
    loader = trainer.get_dataloader(trainer.data["train"], batch_size=n, rank=-1, mode="train")
    return trainer.preprocess_batch(next(iter(loader)))


@pytest.mark.fast
@pytest.mark.parametrize("loss", ["cwd", "mgd", "mimic"])
def test_gradients_reach_student_and_adapters_never_a_frozen_teacher(tmp_path, loss):
    trainer = make_trainer(tmp_path, "detect", DistillConfig(teacher=TEACHER["detect"], loss=loss))
    model = trainer.model
    assert isinstance(model, KDModel)
    model.train()
    teacher_state = {k: v.clone() for k, v in model.teacher_model.state_dict().items()}
    total, items = model(real_batch(trainer))
    assert items[f"{loss}_loss"] > 0 and items["logit_loss"] > 0
    total.sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.connectors.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.student_model.parameters())
    assert all(p.grad is None for p in model.teacher_model.parameters())
    assert not model.teacher_model.training
    if loss == "mgd":
        assert all(p.grad is not None for p in model.feature_losses.parameters())
    for k, v in model.teacher_model.state_dict().items():  # BN statistics included
        assert torch.equal(v, teacher_state[k]), k


@pytest.mark.fast
@pytest.mark.parametrize(("task", "loss"), [("detect", "ncwd"), ("segment", "pkd"), ("pose", "pkd")])
def test_kl_logit_loss_and_new_feature_losses_through_the_trainer_seam(tmp_path, task, loss):
    """logit_loss="kl" on every task: LD + class KL, plus assembled masks (segment) or decoded keypoints (pose)."""
    trainer = make_trainer(tmp_path, task, DistillConfig(teacher=TEACHER[task], loss=loss, logit_loss="kl"))
    model = trainer.model
    model.train()
    task_term = {"detect": {}, "segment": {"mask_coefficient": "mask-kl"}, "pose": {"kpts": "oks"}}[task]
    assert trainer.distill_plan["logit_loss"] == "kl"
    assert trainer.distill_plan["logit_terms"] == {"boxes": "ld-kl", "scores": "binary-kl", **task_term}
    total, items = model(real_batch(trainer))
    assert bool(torch.isfinite(total).all()) and items[f"{loss}_loss"] > 0 and items["logit_loss"] > 0
    total.sum().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.student_model.model[-1].parameters())
    assert all(p.grad is None for p in model.teacher_model.parameters())


@pytest.mark.fast
def test_distill_off_epochs_follows_the_trainers_close_mosaic(tmp_path):
    config = DistillConfig(teacher=TEACHER["detect"], loss="ncwd", distill_off_epochs="close_mosaic")
    trainer = make_trainer(tmp_path, "detect", config)
    trainer.epochs, trainer.args.close_mosaic = 10, 3
    scales = []
    for epoch in range(10):
        trainer.epoch = epoch
        trainer.distill.on_train_epoch_start(trainer)  # the schedule callback, as the trainer runs it
        scales.append(trainer.model.kd_scale)
    assert scales == [1.0] * 7 + [0.0] * 3  # KD off exactly while Ultralytics trains without mosaic


@pytest.mark.fast
def test_adapters_match_channels_and_kd_parts_are_submodules(tmp_path):
    trainer = make_trainer(tmp_path, "detect", DistillConfig(teacher=TEACHER["detect"], loss="mgd"))
    model = trainer.model
    assert [(a.student_channels, a.teacher_channels) for a in model.connectors] == [(64, 128), (128, 256), (256, 512)]
    names = {n for n, _ in model.named_parameters()}
    assert any(n.startswith("connectors.") for n in names)
    assert any(n.startswith("feature_losses.0.generator.") for n in names)
    plan = trainer.distill_plan
    assert [p["student"]["index"] for p in plan["pairs"]] == [15, 18, 21]
    assert (trainer.save_dir / "distill.json").is_file()


@pytest.mark.fast
def test_a_frozen_teacher_is_fused_and_still_feeds_every_kd_term(tmp_path):
    """Conv+BN folded once at build (less work on every batch); its hooked features and head outputs still flow."""
    trainer = make_trainer(tmp_path, "detect", DistillConfig(teacher=TEACHER["detect"]))
    model = trainer.model.train()
    assert model.teacher_model.is_fused() and not model.student_model.is_fused()
    _, items = model(real_batch(trainer))
    assert items["mimic_loss"] > 0 and items["logit_loss"] > 0


@pytest.mark.fast
def test_online_teacher_is_trainable_and_gets_gradients(tmp_path):
    trainer = make_trainer(tmp_path, "detect", DistillConfig(teacher=TEACHER["detect"], online=True))
    model = trainer.model
    model.train()
    assert model.teacher_model.training and not model.teacher_model.is_fused()  # a trained teacher keeps its BN
    total, items = model(real_batch(trainer))
    assert items["teacher_loss"] > 0
    total.sum().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.teacher_model.parameters())


@pytest.mark.fast
def test_eval_mode_loss_reports_zero_kd_columns(tmp_path):
    trainer = make_trainer(tmp_path, "detect", DistillConfig(teacher=TEACHER["detect"], loss="cwd", logit=True))
    model = trainer.model.eval()
    total, items = model.loss(real_batch(trainer))
    assert float(items["cwd_loss"]) == 0 and float(items["logit_loss"]) == 0
    assert total.shape[0] == 3 + 2


@pytest.mark.fast
@pytest.mark.parametrize(
    ("student", "teacher", "preset", "expected"),
    [
        ("yolov8n.yaml", "yolov8s.yaml", "neck", [15, 18, 21]),
        ("yolov8n.yaml", "yolov8s.yaml", "backbone-neck", [2, 4, 6, 8, 12, 15, 18, 21]),
        ("yolo11n.yaml", "yolo11s.yaml", "neck", [16, 19, 22]),
        ("yolo11n.yaml", "yolo11s.yaml", "backbone-neck", [2, 4, 6, 8, 13, 16, 19, 22]),
    ],
)
def test_layer_presets_resolve_from_the_model(tmp_path, student, teacher, preset, expected):
    trainer = make_trainer(tmp_path, "detect", DistillConfig(teacher=teacher, layers=preset), student=student)
    assert trainer.model.feats_idx == expected
    assert trainer.model.teacher_feats_idx == expected


@pytest.mark.fast
def test_teacher_layers_may_differ_from_student_layers(tmp_path):
    cfg = DistillConfig(teacher="yolo11s.yaml", layers="15,18,21", teacher_layers="neck")
    trainer = make_trainer(tmp_path, "detect", cfg, student="yolov8n.yaml")
    assert trainer.model.feats_idx == [15, 18, 21]
    assert trainer.model.teacher_feats_idx == [16, 19, 22]


@pytest.mark.fast
def test_cross_family_pair_distils_the_outputs_it_shares(tmp_path):
    # YOLO26 has reg_max=1 (no box distribution): the logit loss keeps to the class scores; neck layers map per model.
    cfg = DistillConfig(teacher="yolo26s.yaml", logit=True)
    trainer = make_trainer(tmp_path, "detect", cfg, student="yolov8n.yaml")
    assert trainer.distill_plan["logit_outputs"] == ["scores"]
    assert (trainer.model.feats_idx, trainer.model.teacher_feats_idx) == ([15, 18, 21], [16, 19, 22])


def _nc1_data(tmp_path):
    data = tmp_path / "one-class.yaml"
    data.write_text(f"path: {TASK_DATA['detect'].parent}\ntrain: images/train\nval: images/val\nnames:\n  0: person\n")
    return data


@pytest.mark.fast
@pytest.mark.parametrize(
    ("config", "kwargs", "message"),
    [
        ({"layers": "15,18,40"}, {}, "student layer 40 does not exist"),
        ({"layers": "15,18,22"}, {}, "layer 22 is the Detect head"),
        ({"layers": "15,18,21", "teacher_layers": "18,21,15"}, {}, "spatial mismatch"),
        ({"layers": "15,18", "teacher_layers": "15,18,21"}, {}, "layer count mismatch"),
        ({"teacher": "yolov8s-seg.yaml"}, {}, "task mismatch"),
        ({"teacher": "missing/teacher.pt"}, {}, "teacher weights 'missing/teacher.pt' not found"),
    ],
)
def test_bad_pairs_fail_before_training_with_one_clear_error(tmp_path, config, kwargs, message):
    cfg = DistillConfig(**{"teacher": TEACHER["detect"], **config})
    with pytest.raises(DistillError, match=message):
        make_trainer(tmp_path, "detect", cfg, **kwargs)


def test_class_mismatch_names_both_counts(tmp_path, teachers):
    cfg = DistillConfig(teacher=str(teachers["detect"]))
    with pytest.raises(DistillError, match=r"class mismatch: teacher .* has nc=80, the dataset/student has nc=1"):
        make_trainer(tmp_path, "detect", cfg, data=_nc1_data(tmp_path))


def test_pose_teacher_for_detect_student_is_a_task_mismatch(tmp_path, teachers):
    with pytest.raises(DistillError, match="is a pose model, the student is detect"):
        make_trainer(tmp_path, "detect", DistillConfig(teacher=str(teachers["pose"])))


@pytest.mark.fast
def test_adapters_and_generators_join_the_optimizer(tmp_path):
    trainer = make_trainer(tmp_path, "detect", DistillConfig(teacher=TEACHER["detect"], loss="mgd"))
    optimizer = trainer.build_optimizer(trainer.model, name="SGD", lr=0.01)
    in_optimizer = {id(p) for group in optimizer.param_groups for p in group["params"]}
    kd_params = [*trainer.model.connectors.parameters(), *trainer.model.feature_losses.parameters()]
    assert kd_params and all(id(p) in in_optimizer for p in kd_params)


def test_pose_kpt_shape_mismatch_is_named(tmp_path, teachers):
    src = TASK_DATA["pose"].parent
    data = tmp_path / "pose2d.yaml"
    data.write_text(f"path: {src}\ntrain: images/train\nval: images/val\nkpt_shape: [17, 2]\nnames:\n  0: person\n")
    with pytest.raises(DistillError, match=r"kpt_shape mismatch: teacher .* has \[17, 3\], the dataset has \[17, 2\]"):
        make_trainer(tmp_path, "pose", DistillConfig(teacher=str(teachers["pose"])), data=data)


def pickled_globals(path) -> set[str]:
    """The ``module.Name`` of every class or function a ``torch.save`` archive's pickle names."""
    with zipfile.ZipFile(path) as archive:
        data = archive.read(next(n for n in archive.namelist() if n.endswith("/data.pkl")))
    return {arg.replace(" ", ".") for op, arg, _ in pickletools.genops(data) if op.name == "GLOBAL"}


def save_under_old_names(path, checkpoint: dict, monkeypatch) -> None:
    """``torch.save`` with our classes pickled under their modules before the engine package (issue 39).

    Stand-in modules of the old names hold the classes while they are pickled, so the file does not depend on the
    project's own aliases, which are what is tested.
    """
    with monkeypatch.context() as patch:
        for old, cls in (("distill.model", KDModel), ("distill.connectors", ChannelAdapter)):
            stand_in = types.ModuleType(old)
            setattr(stand_in, cls.__qualname__, cls)
            patch.setitem(sys.modules, old, stand_in)
            patch.setattr(cls, "__module__", old)
        torch.save(checkpoint, path)


@pytest.mark.fast
@pytest.mark.parametrize("restricted", [True, False], ids=["restricted-loader", "trusting-loader"])
def test_a_checkpoint_from_before_the_engine_package_still_loads(tmp_path, monkeypatch, restricted):
    """An interrupted run's ``last.pt`` from before the move names ``distill.model.KDModel``: it still loads.

    Written as Ultralytics' trainer writes one mid-run (the KD model's EMA, teacher stripped, in half precision), and
    read by :func:`read_checkpoint` (a resume's first read; the trainer's own goes through the same Ultralytics
    loader) under both of Ultralytics' loaders: the restricted one (our default) and the trusting one
    (``YOLO_DISTILL_TRUST_CHECKPOINTS=1``), which imports the pickled module by name.
    """
    trainer = make_trainer(tmp_path, "detect", DistillConfig(teacher=TEACHER["detect"], loss="mgd"))
    ema = deepcopy(ModelEMA(trainer.model).ema).half()
    ema.criterion = None
    last = tmp_path / "last.pt"
    save_under_old_names(last, {"epoch": 3, "model": None, "ema": ema, "train_args": vars(trainer.args)}, monkeypatch)
    names = pickled_globals(last)
    assert {"distill.model.KDModel", "distill.connectors.ChannelAdapter"} <= names
    assert not any(name.startswith("distill.engine.") for name in names)

    monkeypatch.setattr(ultralytics.nn.tasks, "SAFE_LOAD", restricted)
    refuse = pytest.fail  # a module it cannot import sends Ultralytics' trusting loader to pip: never here
    monkeypatch.setattr(ultralytics.nn.tasks, "check_requirements", lambda name, *a, **k: refuse(f"pip {name}"))
    model, ckpt = read_checkpoint(last, "resume")
    assert type(model) is KDModel and ckpt["epoch"] == 3
    assert [type(c) for c in model.connectors] == [ChannelAdapter] * len(ema.connectors)
    for part, state in ema.kd_state_dict().items():
        for key, value in state.items():
            assert torch.equal(model.kd_state_dict()[part][key], value.float()), f"{part}.{key}"
