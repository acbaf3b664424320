"""Every setting is declared once (distill.settings) and reachable from each layer: CLI, step, component, pipeline,
TrainJob; Ultralytics arguments travel as ``train_args``, checked before anything runs."""

from __future__ import annotations

import ast
import inspect
import json
import re
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, cli, cli_here, one_error_line

from distill import settings
from distill.cli import build_parser
from distill.config import DistillConfig
from distill.errors import DistillError
from distill.pipelines.pipeline import ClusterSettings, compile_pipeline

#: A value for every KD setting that differs from its default (a new setting without one here fails the first test).
CHANGED = {
    "loss": "cwd", "logit": False, "logit_loss": "kl", "layers": [15, 18, 21], "teacher_layers": [16, 19, 22],
    "online": True, "feat_weight": 2.5, "logit_weight": 0.5, "logit_tau": 4.0, "logit_conf_weight": True, "tau": 2.0,
    "mgd_ratio": 0.5, "mgd_alpha": 3e-5, "schedule": "cosine", "distill_off_epochs": 3, "pseudo_conf": 0.3,
    "unlabeled_ratio": 2.0, "pool_targets": "soft", "pool_rounds": 2, "pool_teacher": "ema", "burn_in": 3,
    "ema_decay": 0.9, "uncertain_conf": 0.2, "strong_aug": True, "pool_kd": True,
    "pool_keep_empty": True,
}  # fmt: skip


@pytest.mark.fast
def test_every_kd_setting_is_declared_with_a_changed_value_here():
    fields = set(DistillConfig.__dataclass_fields__) - {"teacher", "extra"}
    assert {o.name for o in settings.KD} == fields == set(CHANGED)
    for option in settings.KD:
        assert option.help and option.kind in {str, int, float, bool}, option
        assert option.default == DistillConfig.__dataclass_fields__[option.name].default


@pytest.mark.fast
def test_cli_distill_and_step_distill_reach_every_setting():
    changed = DistillConfig(teacher="t.pt", **CHANGED).to_dict()
    words = settings.command_line("distill", data="d", teacher="t.pt", student="s.yaml", run_id="r", **CHANGED)
    step = build_parser().parse_args(["step", *words])
    assert DistillConfig(teacher="t.pt", **settings.values(settings.KD, step)).to_dict() == changed
    flags = [w for o in settings.KD for w in o.to_args(CHANGED[o.name])]
    engine = build_parser().parse_args(["distill", "--data", "d", "--student", "s", "--teacher", "t.pt", *flags])
    assert DistillConfig(teacher="t.pt", **settings.values(settings.KD, engine)).to_dict() == changed
    defaults = build_parser().parse_args(["step", *settings.command_line("distill", data="d", teacher="t", student="s",
                                                                         run_id="r")])  # fmt: skip
    assert DistillConfig(teacher="t", **settings.values(settings.KD, defaults)) == DistillConfig(teacher="t")


@pytest.mark.fast
def test_step_function_and_component_take_every_setting():
    from distill.components.steps import distill as component
    from distill.steps.training import distill as step

    assert inspect.signature(step).parameters["settings"].kind is inspect.Parameter.VAR_KEYWORD
    kd, rest = settings.split_kd({**CHANGED, "lr0": 0.01})
    assert kd == CHANGED and rest == {"lr0": 0.01}
    assert {"kd", "sweep_item", "train_args"} <= set(inspect.signature(component).parameters)
    as_text = {o.name: o.pipeline_value(o.coerce(CHANGED[o.name])) for o in settings.KD}  # what KFP hands over
    as_text = {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in as_text.items()}
    typed = settings.coerce_kd(as_text)
    assert DistillConfig(teacher="t", **typed).to_dict() == DistillConfig(teacher="t", **CHANGED).to_dict()
    # the kd struct of a compiled pipeline holds numbers as doubles: a whole number arrives as "2.0"
    assert settings.coerce_kd({"pool_rounds": "2.0"}) == {"pool_rounds": 2}
    with pytest.raises(DistillError, match="pool_rounds must be int, got '1.5'"):
        settings.coerce_kd({"pool_rounds": "1.5"})


@pytest.mark.fast
@pytest.mark.parametrize("sweep", [False, True])
def test_compiled_pipeline_has_every_setting_with_its_default(tmp_path, sweep):
    path = compile_pipeline(str(tmp_path / "p.yaml"), ClusterSettings(image="registry.example/y:1"), sweep=sweep)
    spec, platform = yaml.safe_load_all(Path(path).read_text())
    params = spec["root"]["inputDefinitions"]["parameters"]
    executors = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert not any("pvcMount" in e for e in executors.values())  # no input-cache volume unless asked (--cache-pvc)
    kinds = {str: "STRING", int: "NUMBER_INTEGER", float: "NUMBER_DOUBLE", bool: "BOOLEAN"}
    for option in settings.KD:
        if sweep and option.name in {"loss", "layers"}:
            assert option.name not in params  # each sweep item sets them
            continue
        assert params[option.name]["defaultValue"] == option.pipeline_default, option.name
        assert params[option.name]["parameterType"] == kinds[option.pipeline_type], option.name
    assert params["train_args"] == {"defaultValue": {}, "isOptional": True, "parameterType": "STRUCT"}


@pytest.mark.fast
@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"train_args": {"lr": 0.1}}, "train_args: 'lr' is not an Ultralytics train argument (did you mean"),
        ({"train_args": {"lr0": -1}}, "'lr0=-1' is an invalid value"),
        ({"train_args": {"epochs": 3}}, "train_args: 'epochs' has its own pipeline parameter"),
        ({"train_args": "[1, 2]"}, "train_args must be a mapping"),
        ({"loss": "foo"}, "loss must be one of .*, got 'foo'"),
        ({"logit": "maybe"}, "logit must be true or false"),
        ({"tau": True}, "tau must be float, got True"),
        ({"distill_off_epochs": -5}, "distill_off_epochs must be"),
    ],
)
def test_pipeline_arguments_are_checked_before_anything_runs(params, message):
    with pytest.raises(DistillError, match=message.replace("(", r"\(")):
        settings.pipeline_arguments({"data_source": "x", **params})


def test_run_local_refuses_a_bad_train_args_key_in_one_line(tmp_path):
    """No stack is started and no step runs: the stack folder is never created."""
    proc = cli("pipeline", "run-local", f"data_source={tmp_path}", 'train_args={"lr": 0.1}',
               "--stack-dir", str(tmp_path / "stack"), check=False)  # fmt: skip
    one_error_line(proc, 2, contains="train_args: 'lr' is not an Ultralytics train argument", alone=True)
    assert not (tmp_path / "stack").exists()


@pytest.mark.fast
def test_steps_do_not_import_the_cli_nor_read_argparse_internals():
    for path in (ROOT / "distill").rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and path.parent.name == "steps":
                assert not (node.module or "").endswith("cli"), f"{path} imports the CLI"
            if isinstance(node, ast.Attribute):
                assert node.attr not in {"_actions", "_SubParsersAction"}, f"{path} reads argparse internals"


@pytest.mark.fast
def test_command_line_round_trip_keeps_ultralytics_arguments():
    words = settings.command_line("train", data="d", model="m.yaml", name="n", run_id="r", lr0=0.01, cos_lr=True)
    parsed = build_parser().parse_args(["step", *words])
    assert parsed.overrides == ["lr0=0.01", "cos_lr=true"] and json.loads("true") is True


@pytest.mark.fast
def test_gate_settings_are_declared_once_and_reach_every_layer(tmp_path):
    """The promotion gate's settings (issue 24, 39): CLI evaluate and register, both components' one ``gate`` mapping,
    the compiled pipeline's parameters and the mapping each task is handed."""
    from distill.components.steps import evaluate, register

    names = {o.name for o in settings.GATE}
    assert names == {"min_gain", "gate", "gate_level"}
    changed = {"gate": "point", "gate_level": 0.8, "min_gain": 0.02}
    flags = [w for o in settings.GATE for w in o.to_args(changed[o.name])]
    evaluate_args = ["step", "evaluate", "--data", "d", "--teacher", "t", "--baseline", "b", "--distilled", "s",
                     "--run-id", "r"]  # fmt: skip
    register_args = ["step", "register", "--model", "m", "--evaluation", "e", "--name", "n", "--run-id", "r"]
    defaults = {o.name: o.default for o in settings.GATE}
    for words in (evaluate_args, register_args):
        given = settings.values(settings.GATE, build_parser().parse_args([*words, *flags]))
        assert settings.coerce_gate(given) == changed
        given = settings.values(settings.GATE, build_parser().parse_args(words))
        assert settings.coerce_gate(given) == settings.coerce_gate({}) == defaults
    for component in (evaluate, register):  # one mapping, not retyped inputs
        parameters = inspect.signature(component).parameters
        assert parameters["gate"].annotation is dict and not set(parameters) & (names - {"gate"}), component.__name__
    as_kfp = {"gate": "point", "gate_level": "0.8", "min_gain": "0.02"}  # a struct's placeholders may arrive as text
    assert settings.coerce_gate(as_kfp) == changed and settings.coerce_gate({"min_gain": 0}) == defaults
    path = compile_pipeline(str(tmp_path / "p.yaml"), ClusterSettings(image="registry.example/y:1"))
    spec = next(yaml.safe_load_all(Path(path).read_text()))
    params = spec["root"]["inputDefinitions"]["parameters"]
    for option in settings.GATE:
        assert params[option.name]["defaultValue"] == option.pipeline_default, option.name
    tasks = {t["taskInfo"]["name"]: t for c in spec["components"].values() for t in c.get("dag", {}).get("tasks",
             {}).values()} | {t["taskInfo"]["name"]: t for t in spec["root"]["dag"]["tasks"].values()}  # fmt: skip
    for task in ("evaluate", "register"):
        given = tasks[task]["inputs"]["parameters"]["gate"]["runtimeValue"]["constant"]
        assert set(given) == names and all(f"pipelinechannel--{k}" in v for k, v in given.items()), task


@pytest.mark.fast
@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"gate_level": 0.0}, "gate_level must be between 0 and 1 (e.g. 0.9), got 0.0"),
        ({"gate_level": "1"}, "gate_level must be between 0 and 1"),
        ({"min_gain": -0.1}, "min_gain must be >= 0"),
        ({"gate": "strict"}, "gate must be one of ci, point, got 'strict'"),
        ({"min_gain": "much"}, "min_gain must be float, got 'much'"),
        ({"gate_levels": 0.9}, "unknown gate setting(s): gate_levels"),
    ],
)
def test_gate_settings_are_refused_naming_the_value(given, message):
    """One check for each layer: the pipeline's arguments, the components' mapping, the steps' keywords."""
    pattern = re.escape(message)
    with pytest.raises(DistillError, match=pattern):
        settings.coerce_gate(given)
    if "gate_levels" not in given:  # the pipeline has no such parameter to check
        with pytest.raises(DistillError, match=pattern):
            settings.pipeline_arguments({"data_source": "x", **given})


@pytest.mark.fast
def test_cli_refuses_a_bad_gate_setting_in_one_line():
    words = ["step", "register", "--model", "m", "--evaluation", "e", "--name", "n", "--run-id", "r"]
    for flags, message in ((["--gate-level", "1.5"], "gate_level must be between 0 and 1"),
                           (["--min-gain", "-0.1"], "min_gain must be >= 0"),
                           (["--gate", "maybe"],
                            "argument --gate: gate must be one of ci, point, got 'maybe'")):  # fmt: skip
        one_error_line(cli_here(*words, *flags), 2, contains=message, alone=True)


#: A value for every training option that differs from its default (a new option without one here fails the test).
TRAINING_CHANGED = {"epochs": 7, "imgsz": 96, "batch": 4, "device": "cpu", "seed": 3, "workers": 1}


@pytest.mark.fast
def test_training_and_tracking_options_are_declared_once_and_reach_every_layer(tmp_path):
    """Issue 39: epochs, imgsz, batch, device, seed, workers and the MLflow options, one declaration each."""
    from distill.components.steps import distill as distill_component
    from distill.components.steps import evaluate as evaluate_component
    from distill.components.steps import train as train_component

    assert {o.name for o in settings.TRAINING} == set(TRAINING_CHANGED)
    flags = [w for o in settings.TRAINING for w in o.to_args(TRAINING_CHANGED[o.name])]
    for words in (["train", "--model", "m.yaml"], ["distill", "--student", "s", "--teacher", "t.pt"]):
        assert settings.values(settings.TRAINING, build_parser().parse_args([*words, *flags])) == TRAINING_CHANGED
        defaults = settings.values(settings.TRAINING, build_parser().parse_args(words))
        assert defaults == {o.name: o.default for o in settings.TRAINING}
    for step in ("train", "distill"):  # the step's flags, and the TrainJob's command line made from the same spec
        words = settings.command_line(step, data="d", model="m", teacher="t", student="s", name="n", run_id="r",
                                      experiment="e", tracking_uri="http://m", **TRAINING_CHANGED)  # fmt: skip
        parsed = build_parser().parse_args(["step", *words])
        assert settings.values(settings.TRAINING, parsed) == TRAINING_CHANGED
        assert settings.values(settings.TRACKING, parsed) == {"experiment": "e", "tracking_uri": "http://m"}
    for words in (["step", "evaluate", "--data", "d", "--teacher", "t", "--baseline", "b", "--distilled", "s"],
                  ["step", "register", "--model", "m", "--evaluation", "e", "--name", "n"]):  # fmt: skip
        parsed = build_parser().parse_args([*words, "--run-id", "r", "--experiment", "e", "--tracking-uri", "u"])
        assert settings.values(settings.TRACKING, parsed) == {"experiment": "e", "tracking_uri": "u"}
    for component in (train_component, distill_component, evaluate_component):  # one mapping, not retyped inputs
        parameters = set(inspect.signature(component).parameters)
        assert "training" in parameters and not parameters & settings.TRAINING_NAMES, component.__name__
    as_kfp = {k: float(v) if isinstance(v, int) else v for k, v in TRAINING_CHANGED.items()}  # a struct's doubles
    assert settings.coerce_training(as_kfp) == TRAINING_CHANGED
    assert settings.coerce_training({"device": "", "workers": ""}) == {"device": None, "workers": None}
    evaluated = {k: TRAINING_CHANGED[k] for k in settings.EVALUATE_TRAINING}  # evaluate's training: only these
    assert settings.coerce_training(evaluated, settings.EVALUATE_TRAINING) == evaluated
    with pytest.raises(DistillError, match=r"unknown training option\(s\): epochs"):
        settings.coerce_training({"epochs": 3}, settings.EVALUATE_TRAINING)
    path = compile_pipeline(str(tmp_path / "p.yaml"), ClusterSettings(image="registry.example/y:1"))
    spec = next(yaml.safe_load_all(Path(path).read_text()))
    params = spec["root"]["inputDefinitions"]["parameters"]
    for name, option in settings.PIPELINE_TRAINING.items():
        assert params[name]["defaultValue"] == option.pipeline_default, name
    tasks = {t["taskInfo"]["name"]: t for c in spec["components"].values() for t in c.get("dag", {}).get("tasks",
             {}).values()} | {t["taskInfo"]["name"]: t for t in spec["root"]["dag"]["tasks"].values()}  # fmt: skip
    for task, epochs in (("train-teacher", "teacher_epochs"), ("train-student", "student_epochs"),
                         ("distill", "student_epochs")):  # fmt: skip
        given = json.dumps(tasks[task]["inputs"]["parameters"]["training"])
        assert f"pipelinechannel--{epochs}" in given and "pipelinechannel--workers" in given, task
    assert set(tasks["evaluate"]["inputs"]["parameters"]["training"]["runtimeValue"]["constant"]) == set(
        settings.EVALUATE_TRAINING)  # fmt: skip


@pytest.mark.fast
def test_no_layer_retypes_a_training_option_or_a_gate_setting():
    """The training options' and the gate's defaults live in distill.settings alone: no other signature gives one a
    default, and no module looks one up by hand (``TRAINING[2]``, ``GATE[0].default``)."""
    named = (settings.TRAINING_NAMES - {"device", "workers"}) | {o.name for o in settings.GATE}
    other = {("synthetic.py", "generate", "seed"): "the synthetic dataset's own seed",
             ("bootstrap.py", "paired_difference", "seed"): "the bootstrap's resampling seed",
             ("gate.py", "run_noise", "epochs"): "how many late epochs measure the run-to-run noise"}  # fmt: skip
    checked = 0
    for folder in ("distill", "components", "pipelines"):
        for path in (ROOT / folder).rglob("*.py"):
            if path.name == "settings.py":
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.FunctionDef):
                    args = node.args.args + node.args.kwonlyargs
                    defaults = [None] * (len(node.args.args) - len(node.args.defaults)) + node.args.defaults
                    defaults += node.args.kw_defaults
                    for arg, default in zip(args, defaults, strict=True):
                        given = default is not None and not (isinstance(default, ast.Constant) and default.value
                                                             is None)  # fmt: skip
                        if (path.name, node.name, arg.arg) not in other:  # the same word, another setting
                            assert not (arg.arg in named and given), f"{path}:{node.lineno} {node.name}({arg.arg}=)"
                            checked += arg.arg in named
                if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name):
                    assert node.value.id not in {"TRAINING", "GATE"}, f"{path}:{node.lineno} looks a default up by hand"
    assert checked >= 5  # the walk saw the settings' names (the steps' imgsz, the components' gate, ...)
