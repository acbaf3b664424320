"""Issue 37: NaN and infinite numbers, a GPU that is not there, unusable splits and YAML alias bombs.

Each is refused with one ``error:`` line (exit 2) before any training starts and before anything is written: where
the setting is declared (:class:`distill.config.DistillConfig`, :class:`distill.settings.Option`), where the device
is chosen (:mod:`distill.devices`), where a dataset is checked (:mod:`distill.data.dataset_files`, shared by ``train``
and prepare-data) and where a user's YAML is read (:mod:`distill.yaml_files`).
"""

from __future__ import annotations

import math
import shutil
import time
from pathlib import Path

import pytest
import yaml
from conftest import TASK_DATA, cli, one_error_line

from distill import DistillError, settings
from distill.config import DistillConfig, check_training
from distill.devices import check_device, choose_devices, visible_cuda_devices
from distill.yaml_files import MAX_BYTES, parse_yaml, read_yaml

COCO8 = TASK_DATA["detect"]
#: Nine levels of nine: 9**9 (387 million) strings in 1.1 KB. The splits and names are coco8's, so nothing else in
#: the file is wrong: only the alias expansion can refuse it.
LAUGHS = "\n".join(
    ['lol0: &l0 "lol"']
    + [f"lol{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, 10)]
    + [f"path: {COCO8.parent}", "train: images/train", "val: images/val", "names: {0: person}"]
)
#: The KD numbers whose range check (``value < 0``) let NaN and infinity through before issue 37.
UNBOUNDED = ("feat_weight", "logit_weight", "tau", "logit_tau", "mgd_alpha")


def _yaml(path: Path, spec: dict | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(spec if isinstance(spec, str) else yaml.safe_dump(spec))
    return path


# --- 3. NaN and infinity, and the training numbers -------------------------------------------------------------------


@pytest.mark.fast
@pytest.mark.parametrize("name", UNBOUNDED)
@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_distill_config_refuses_nan_and_infinity(name, value):
    with pytest.raises(DistillError, match=f"{name} must be a non-negative number, got {value!r}"):
        DistillConfig(teacher="t.pt", **{name: value})


@pytest.mark.fast
def test_distill_config_refuses_a_ratio_that_is_no_number():
    with pytest.raises(DistillError, match=r"mgd_ratio must be in \[0, 1\), got '0.5'"):  # was a TypeError
        DistillConfig(teacher="t.pt", mgd_ratio="0.5")


@pytest.mark.fast
def test_every_number_option_refuses_nan_and_infinity_in_every_spelling():
    """CLI flags, pipeline parameters, step options and gate settings all type their numbers through Option.coerce."""
    options = [*settings.KD, *settings.GATE, *(o for step in settings.STEP_OPTIONS.values() for o in step)]
    numbers = [o for o in options if o.kind in {int, float} and o.parse is None]
    assert {"logit_weight", "feat_weight", "min_gain", "gate_level", "epochs", "imgsz", "batch"} <= {
        o.name for o in numbers
    }
    for option in numbers:
        for value in ("nan", "inf", "-inf", "NaN", math.nan, math.inf):
            with pytest.raises(DistillError, match=option.name):  # never OverflowError (int("inf")) nor a NaN through
                option.coerce(value)


@pytest.mark.fast
@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"logit_weight": "nan"}, "logit_weight must be a finite number, got 'nan'"),
        ({"feat_weight": "inf"}, "feat_weight must be a finite number, got 'inf'"),
        ({"logit_weight": math.nan}, "logit_weight must be a finite number, got nan"),
        ({"min_gain": "inf"}, "min_gain must be a finite number"),
        ({"gate_level": math.nan}, "gate_level must be a finite number"),
        ({"imgsz": 0}, "imgsz must be a whole number of pixels >= 32, got 0"),
        ({"batch": 0}, "batch must be a whole number >= 1, -1 (AutoBatch)"),
        ({"batch": "nan"}, "batch must be int, got 'nan'"),
        ({"teacher_epochs": 0}, "teacher_epochs: 'epochs=0' is an invalid value"),
        ({"student_epochs": "inf"}, "epochs must be int, got 'inf'"),
        ({"seed": -1}, "seed: 'seed=-1' is an invalid value"),
    ],
)
def test_pipeline_arguments_refuse_what_pipeline_submit_would_send(params, message):
    """``pipeline submit`` / ``schedule`` / ``run-local`` check the run's parameters here before any pod starts."""
    with pytest.raises(DistillError, match=message.replace("(", r"\(").replace(")", r"\)")):
        settings.pipeline_arguments({"data_source": "x", **params})


@pytest.mark.fast
def test_pipeline_arguments_keep_sane_training_numbers():
    params = {"data_source": "x", "imgsz": "64.0", "batch": -1, "teacher_epochs": 3, "seed": 0}
    assert settings.pipeline_arguments(params) == {"data_source": "x", "imgsz": 64, "batch": -1, "teacher_epochs": 3,
                                                   "seed": 0}  # fmt: skip


@pytest.mark.fast
def test_training_numbers_ultralytics_would_change_silently_are_refused():
    for good in ({"imgsz": 32}, {"imgsz": 640}, {"batch": 16}, {"batch": -1}, {"batch": 0.7}):
        check_training(**good)
    for bad in ({"imgsz": 16}, {"imgsz": 0}, {"imgsz": 64.0}, {"batch": 0}, {"batch": -2}, {"batch": math.nan},
                {"batch": math.inf}, {"batch": True}):  # fmt: skip
        with pytest.raises(DistillError, match=next(iter(bad))):
            check_training(**bad)


@pytest.mark.parametrize(
    ("args", "text"),
    [
        (("distill", "--logit-weight", "nan"), "argument --logit-weight: logit_weight must be a finite number"),
        (("distill", "--feat-weight", "inf"), "argument --feat-weight: feat_weight must be a finite number"),
        (("train", "--imgsz", "16"), "imgsz must be a whole number of pixels >= 32, got 16"),
        (("train", "--batch", "0"), "batch must be a whole number >= 1, -1 (AutoBatch)"),
    ],
)
def test_cli_refuses_bad_numbers_before_training(tmp_path, args, text):
    command, *flags = args
    models = ("--student", "yolov8n.yaml", "--teacher", "yolov8s.yaml") if command == "distill" else (
        "--model", "yolov8n.yaml")  # fmt: skip
    proc = cli(command, "--data", str(COCO8), *models, "--epochs", "1", "--device", "cpu", "--out",
               str(tmp_path / "run"), *flags, check=False)  # fmt: skip
    one_error_line(proc, 2, contains=text, alone=True)
    assert not (tmp_path / "run").exists()


# --- 4. a GPU that is not visible ------------------------------------------------------------------------------------


@pytest.mark.fast
def test_choose_devices_refuses_a_gpu_that_is_not_visible():
    assert choose_devices("1", 16, cuda_count=2).devices == ["cuda:1"]
    check_device("0,1", cuda_count=2)
    check_device("cpu", cuda_count=0)
    check_device(None, cuda_count=0)
    with pytest.raises(DistillError, match=r"device '3': GPU 3 is not visible here \(visible: 0, 1\)"):
        choose_devices("3", 16, cuda_count=2)
    with pytest.raises(DistillError, match=r"device 'cuda:0,cuda:2': GPU 2 is not visible"):
        choose_devices("cuda:0,cuda:2", 16, cuda_count=2)
    with pytest.raises(DistillError, match=r"device '0': no CUDA device is visible here \(asked for GPU 0\)"):
        check_device("0", cuda_count=0)


def test_cli_and_step_refuse_a_gpu_that_is_not_visible(tmp_path):
    """The first id past the visible ones (7 in the issue; 0 on a machine without CUDA) is refused before training."""
    missing = str(visible_cuda_devices())
    proc = cli("train", "--data", str(COCO8), "--model", "yolov8n.yaml", "--epochs", "1", "--device", missing,
               "--out", str(tmp_path / "run"), check=False)  # fmt: skip
    one_error_line(proc, 2, start=f"device '{missing}': ", alone=True)
    assert not (tmp_path / "run").exists()
    proc = cli(
        "step",
        "train",
        "--data",
        str(COCO8),
        "--model",
        "yolov8n.yaml",
        "--name",
        "t",
        "--run-id",
        "r",
        "--prefix",
        "s3://bucket/p",
        "--device",
        missing,
        check=False,
    )  # fmt: skip  (refused before any S3 call)
    one_error_line(proc, 2, start=f"device '{missing}': ", alone=True)


# --- 8, 9. splits without images, unusable splits, labels beyond the names -------------------------------------------


def _coco8_copy(tmp_path: Path) -> Path:
    return Path(shutil.copytree(COCO8.parent, tmp_path / "coco8", ignore=shutil.ignore_patterns("*.cache")))


def _unusable(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    """Datasets Ultralytics cannot train on, each with the words of its refusal."""
    coco8 = _coco8_copy(tmp_path)
    empty = tmp_path / "empty"
    for split in ("train", "val"):
        (empty / "images" / split).mkdir(parents=True)
    etc = tmp_path / "etc"  # a folder of other files, as /etc
    passwd = _yaml(etc / "passwd", "root:x:0:0:root:/root:/bin/bash\n")
    return {
        "no images": (
            _yaml(empty / "data.yaml", {"train": "images/train", "val": "images/val", "names": {0: "a"}}),
            f"the train split '{empty / 'images' / 'train'}' holds no images",
        ),
        "a folder without images": (
            _yaml(tmp_path / "d2" / "data.yaml", {"path": str(etc), "train": ".", "val": ".", "names": {0: "a"}}),
            f"the train split '{etc}' holds no images",
        ),
        "a file that is no list": (
            _yaml(tmp_path / "d3" / "data.yaml", {"path": str(coco8), "train": str(passwd), "val": "images/val",
                                                  "names": {0: "a"}}),
            f"the train split '{passwd}' is neither a folder of images nor a .txt list",
        ),
        "labels beyond the names": (
            _yaml(tmp_path / "d4" / "data.yaml", {"path": str(coco8), "train": "images/train", "val": "images/val",
                                                  "names": ["a", "b"]}),
            "labels/train/000000000009.txt': Label class 50 exceeds dataset class count 2",
        ),
    }  # fmt: skip


def test_prepare_data_refuses_unusable_splits_naming_split_and_folder(tmp_path):
    """The local half of prepare-data (``import_dataset``): one DistillError, never FileNotFoundError."""
    from distill.steps.prepare_data import import_dataset

    for kind, (data, text) in _unusable(tmp_path).items():
        with pytest.raises(DistillError, match=text.replace("(", r"\(").replace(".", r"\.")):
            import_dataset(str(data.parent), tmp_path / "out" / kind.replace(" ", "-"))


def test_cli_train_refuses_what_prepare_data_refuses_before_writing_out(tmp_path):
    for kind, (data, text) in _unusable(tmp_path).items():
        out = tmp_path / "runs" / kind.replace(" ", "-")
        proc = cli("train", "--data", str(data), "--model", "yolov8n.yaml", "--epochs", "1", "--imgsz", "64",
                   "--device", "cpu", "--out", str(out), check=False)  # fmt: skip
        one_error_line(proc, 2, contains=text, alone=True)
        assert not out.exists(), kind  # no args.yaml, no weights/


# --- 10. YAML alias bombs ---------------------------------------------------------------------------------------------


@pytest.mark.fast
def test_alias_bomb_is_refused_at_once_and_plain_yaml_passes(tmp_path):
    started = time.monotonic()
    with pytest.raises(DistillError, match="data 'x': its YAML aliases expand to more than"):
        parse_yaml(LAUGHS, "data 'x'")
    six = "\n".join(line for line in LAUGHS.splitlines() if not line.startswith(("lol7", "lol8", "lol9")))
    with pytest.raises(DistillError, match=r"its YAML aliases expand \d+ nodes into \d+ \(more than 100000 added\)"):
        parse_yaml(six, "x")  # 9**6 = 531441: under the hard cap, far over what aliases may add
    with pytest.raises(DistillError, match="refers to the node that contains it"):
        parse_yaml("a: &a [1, *a]", "x")
    assert time.monotonic() - started < 2
    assert parse_yaml("base: &b {lr0: 0.01}\nrun:\n  <<: *b\n  epochs: 3\n", "x") == {
        "base": {"lr0": 0.01}, "run": {"lr0": 0.01, "epochs": 3}}  # fmt: skip
    assert read_yaml(COCO8, "coco8")["names"][0] == "person"
    big = tmp_path / "big.yaml"
    big.write_text("#" * (MAX_BYTES + 1))
    with pytest.raises(DistillError, match=r"big.yaml' is \d+ bytes: a YAML file over 2 MiB is refused"):
        read_yaml(big, f"data '{big}'")


def test_alias_bomb_is_refused_by_train_before_ultralytics_reads_it(tmp_path):
    data = _yaml(tmp_path / "laughs" / "data.yaml", LAUGHS)
    out = tmp_path / "run"
    proc = cli("train", "--data", str(data), "--model", "yolov8n.yaml", "--epochs", "1", "--imgsz", "64", "--device",
               "cpu", "--out", str(out), check=False)  # fmt: skip
    one_error_line(proc, 2, start=f"data '{data}': its YAML aliases expand to more than", alone=True)
    assert not out.exists()
    model = _yaml(tmp_path / "model.yaml", LAUGHS.replace("path:", "nc: 1\n#"))
    proc = cli("train", "--data", str(COCO8), "--model", str(model), "--epochs", "1", "--device", "cpu", "--out",
               str(out), check=False)  # fmt: skip
    one_error_line(proc, 2, start=f"model yaml '{model}': its YAML aliases expand", alone=True)


def test_alias_bomb_and_empty_splits_are_refused_by_prepare_data(stack_env, tmp_path):
    from distill.data import storage

    prefix = stack_env["YOLO_DISTILL_S3_PREFIX"]
    before = sorted(storage.list_keys(f"{prefix}/datasets/"))
    data = _yaml(tmp_path / "laughs" / "data.yaml", LAUGHS)
    proc = cli("step", "prepare-data", "--source", str(data.parent), check=False)
    one_error_line(proc, 2, contains="data.yaml': its YAML aliases expand to more than", alone=True)
    data, text = _unusable(tmp_path)["a folder without images"]
    proc = cli("step", "prepare-data", "--source", str(data.parent), check=False)
    one_error_line(proc, 2, contains=text, alone=True)
    assert sorted(storage.list_keys(f"{prefix}/datasets/")) == before
