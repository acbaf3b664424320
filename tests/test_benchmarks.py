"""The benchmark scripts: their arithmetic on known inputs, and a real smoke run of each (speed: default suite)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import BCCD, DATA, ROOT

from benchmarks import accuracy, data, speed


def _variant(seconds: float) -> dict:
    return {"median_s": seconds, "peak_rss_mb": 1000.0, "peak_cuda_mb": None, "breakdown_s": {}}


@pytest.mark.fast
def test_speed_ratios_divide_by_the_floor_and_by_ultralytics():
    results = {
        "v8s-v8n": {
            "plain": _variant(0.4), "teacher": _variant(0.2), "cwd": _variant(0.63), "default": _variant(0.6),
            "online-cwd": _variant(1.5), "teacher-train": _variant(1.1), "ultralytics-kd": _variant(0.75),
            "pool-online": _variant(0.62), "pool-online-ema": _variant(0.5),
        },
        "v8l-v8n": {"plain": _variant(0.4), "default": _variant(1.0)},  # no teacher timing: no ratio
    }  # fmt: skip
    kd_over_floor, ours_over_native = speed.ratios(results)
    assert kd_over_floor == {"v8s-v8n/cwd": 1.05, "v8s-v8n/default": 1.0, "v8s-v8n/online-cwd": 1.0,
                             "v8s-v8n/pool-online": 1.033}  # fmt: skip
    assert ours_over_native == {"v8s-v8n": 0.8}
    assert speed.pool_over_ltt(results) == {"v8s-v8n/pool-online": 1.55, "v8s-v8n/pool-online-ema": 1.25,
                                            "v8s-v8n/default": 1.5, "v8l-v8n/default": 2.5}  # fmt: skip
    table = speed.markdown({"results": results, "kd_over_floor": kd_over_floor})
    assert "| v8s-v8n | cwd | 630 | 1.050 | 0.840 |" in table


def _round(seconds: float, *times: float) -> dict:
    return dict(_variant(seconds), times_s=list(times), breakdown_s={"teacher_forward": seconds / 2})


@pytest.mark.fast
def test_speed_rounds_pool_steps_and_give_each_rounds_ratio():
    """Rounds pool every timed step for the median; the range is the ratio of each round on its own."""
    pooled = speed.pool([_round(0.3, 0.2, 0.3, 0.4), _round(0.6, 0.5, 0.6, 0.7)])
    assert (pooled["median_s"], pooled["steps"], pooled["round_median_s"]) == (0.45, 6, [0.3, 0.6])
    assert pooled["breakdown_s"] == {"teacher_forward": 0.225} and pooled["rounds"] == 2
    assert speed.pool([_round(0.3, 0.3), {"error": "boom"}]) == {"error": "boom", "rounds": 2}
    results = {"p": {
        "plain": speed.pool([_round(0.4, 0.4), _round(0.5, 0.5)]),
        "teacher": speed.pool([_round(0.2, 0.2), _round(0.3, 0.3)]),
        "cwd": speed.pool([_round(0.6, 0.6), _round(0.96, 0.96)]),
    }}  # fmt: skip
    assert speed.ratio_ranges(results) == {"p/cwd": [1.0, 1.2]}
    report = speed.summarise(results, {"benchmark": "speed"})
    assert report["kd_over_floor"] == {"p/cwd": 1.114} and report["kd_over_floor_range"] == {"p/cwd": [1.0, 1.2]}
    assert report["kd_over_floor_p10"] == {"p/cwd": round(0.636 / (0.41 + 0.21), 3)}  # p10 of 2 steps: 10% along
    assert "| p | cwd | 780 · 636 | 1.114 (1.00–1.20) · 1.026 |" in speed.markdown(report)


@pytest.mark.fast
def test_speed_report_is_recomputed_from_its_recorded_steps(tmp_path):
    """--from-report rebuilds every statistic from ``times_s`` (here: a report written before p10 existed)."""
    old = {"benchmark": "speed", "profile": "cpu", "machine": {"device": "cpu"}, "kd_over_floor": {"stale": 9.0},
           "results": {"p": {"plain": dict(_variant(0.5), times_s=[0.4, 0.5, 0.6]),
                             "teacher": dict(_variant(0.2), times_s=[0.2, 0.2, 0.2]),
                             "default": dict(_variant(0.9), times_s=[0.6, 0.8, 0.9])}}}  # fmt: skip
    (tmp_path / "old.json").write_text(json.dumps(old))
    report = speed.resummarise(tmp_path / "old.json")
    assert report["results"]["p"]["default"]["median_s"] == 0.8 and report["kd_over_floor"] == {"p/default": 1.143}
    assert report["kd_over_floor_p10"] == {"p/default": round(0.64 / 0.62, 3)}
    assert report["resummarised_from"] == "old.json" and report["profile"] == "cpu"


@pytest.mark.fast
def test_accuracy_summary_is_mean_and_sample_std_over_seeds(tmp_path):
    runs = [
        {"job": {"spec": None, "seed": s, "dir": str(tmp_path / f"s{s}")}, "train_s": 10.0,
         "test": {"metrics/mAP50-95(B)": v, "metrics/mAP50(B)": 2 * v}}
        for s, v in ((0, 0.2), (1, 0.3))
    ]  # fmt: skip
    s = accuracy.summarise("baseline", runs)
    assert (s["name"], s["seeds"], s["map50_95_mean"], s["map50_mean"]) == ("baseline", [0, 1], 0.25, 0.5)
    assert s["map50_95_std"] == pytest.approx(0.0707, abs=1e-4) and s["kd_share_of_loss"] is None
    table = accuracy.markdown({"students": [s, dict(s, name="cwd", map50_95_mean=0.3)]})
    assert table.index("| cwd |") < table.index("| baseline |") and "+0.0500" in table


@pytest.mark.fast
def test_accuracy_variant_is_validated_before_any_training():
    assert accuracy.parse_variant("w3:loss=cwd,logit=0,feat_weight=3") == (
        "w3",
        {"loss": "cwd", "logit": False, "feat_weight": 3},
    )
    with pytest.raises(SystemExit, match="loss must be one of .*, got 'cdw'"):
        accuracy.parse_variant("bad:loss=cdw")
    with pytest.raises(SystemExit, match="is not key=value"):
        accuracy.parse_variant("bad:loss")


def _bench(module: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, capture_output=True, text=True)


def test_speed_benchmark_smoke(tmp_path):
    """A real run of the speed script (64 px, the quick profile's few steps, one round) writes a complete report.

    ``pool-online`` trains on a pool the script writes (half of the batches' images), its targets made by the teacher.
    Several rounds are pooled by the arithmetic tested above; one round keeps this run to one process per variant.
    """
    proc = _bench("benchmarks.speed", "--profile", "quick", "--imgsz", "64", "--batch", "4", "--rounds", "1",
                  "--variants", "plain,teacher,default,ultralytics-kd,pool-online", "--data-root", str(DATA),
                  "--results", str(tmp_path))  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    (path,) = tmp_path.glob("speed-quick-*.json")
    report = json.loads(path.read_text())
    pair = report["results"]["v8s-v8n"]
    assert all(pair[v]["median_s"] > 0 and pair[v]["steps"] == 8 and len(pair[v]["round_median_s"]) == 1 for v in pair)
    assert (
        set(pair["default"]["breakdown_s"]) == set(speed.BREAKDOWN)
        and pair["default"]["breakdown_s"]["teacher_forward"] > 0
    )
    assert report["kd_over_floor"]["v8s-v8n/default"] > 0 and report["ours_over_native"]["v8s-v8n"] > 0
    low, high = report["kd_over_floor_range"]["v8s-v8n/default"]
    assert 0 < low == high and report["settings"]["rounds"] == 1
    assert 0 < pair["default"]["p10_s"] <= pair["default"]["median_s"] and report["ours_over_native_p10"]["v8s-v8n"] > 0
    assert report["machine"]["device"] == "cpu" and report["machine"]["ultralytics"]
    assert report["pool_over_ltt"]["v8s-v8n/pool-online"] > 0 and report["pool_over_ltt"]["v8s-v8n/default"] > 0
    assert pair["pool-online"]["breakdown_s"]["teacher_forward"] > 0  # the teacher ran on the pool's batches


def test_accuracy_report_records_the_synthetic_set_it_was_given(tmp_path):
    """``--synthetic`` is the set the runs train on: the report's settings say it, not the profile's (96, 64, 64)."""
    proc = _bench("benchmarks.accuracy", "--profile", "quick", "--synthetic", "8,4,4", "--students", "baseline",
                  "--finished-only", "--no-latency", "--workdir", str(tmp_path / "work"),
                  "--results", str(tmp_path))  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    (path,) = tmp_path.glob("accuracy-quick-*.json")
    assert json.loads(path.read_text())["settings"]["synthetic"] == [8, 4, 4]


@pytest.mark.slow
def test_accuracy_benchmark_smoke(tmp_path):
    """A real quick-profile run on BCCD (three students, one seed) writes the report the README table comes from."""
    students = "baseline,cwd+logit,ultralytics-kd"
    proc = _bench("benchmarks.accuracy", "--profile", "quick", "--students", students, "--data-root", str(BCCD),
                  "--workdir", str(tmp_path / "work"), "--results", str(tmp_path))  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    (path,) = tmp_path.glob("accuracy-quick-*.json")
    report = json.loads(path.read_text())
    assert [s["name"] for s in report["students"]] == ["baseline", "cwd+logit", "ultralytics-kd"]
    assert all(s["seeds"] == [0] and 0 <= s["map50_95_mean"] <= 1 for s in report["students"])
    assert report["dataset"]["score_split"] == "test" and report["teacher"]["epochs"] == 3


@pytest.mark.fast
def test_kd_share_counts_every_non_task_loss_column(tmp_path):
    csv = tmp_path / "results.csv"
    csv.write_text(
        "epoch, train/box_loss, train/cls_loss, train/dfl_loss, train/cwd_loss, train/logit_loss, train/teacher_loss\n"
        "1, 3.0, 2.0, 3.0, 1.0, 1.0, 9.0\n"
        "2, 2.0, 1.0, 1.0, 0.5, 0.5, 9.0\n"
    )
    assert accuracy.kd_share(csv) == {"first_epoch": 0.2, "last_epoch": 0.2}


@pytest.mark.fast
def test_val_curve_reads_every_epochs_validation(tmp_path):
    csv = tmp_path / "results.csv"
    csv.write_text("epoch, metrics/mAP50(B), metrics/mAP50-95(B)\n1, 0.2, 0.1\n2, 0.5, 0.25\n3, 0.6, 0.3\n")
    assert accuracy.val_curve(csv) == [0.1, 0.25, 0.3]
    assert accuracy.val_curve(tmp_path / "missing.csv") is None


@pytest.mark.fast
def test_curve_gains_are_paired_per_epoch_means():
    """Per epoch, the mean over seeds of student − baseline; a seed without a matching baseline curve is left out."""
    from benchmarks import paired

    runs = [
        {"name": "baseline", "seed": 0, "val_curve": [0.10, 0.20, 0.30]},
        {"name": "baseline", "seed": 1, "val_curve": [0.12, 0.18, 0.34]},
        {"name": "kd", "seed": 0, "val_curve": [0.14, 0.25, 0.29]},
        {"name": "kd", "seed": 1, "val_curve": [0.12, 0.26, 0.33]},
        {"name": "kd", "seed": 2, "val_curve": [0.9, 0.9, 0.9]},  # no baseline for seed 2
        {"name": "short", "seed": 0, "val_curve": [0.2]},  # another length: not comparable epoch by epoch
        {"name": "none", "seed": 0, "val_curve": None},
    ]
    gains = paired.curve_gains(runs, ["baseline", "kd", "short", "none"])
    assert list(gains) == ["kd"] and gains["kd"]["seeds"] == [0, 1]
    assert gains["kd"]["mean"] == pytest.approx([0.02, 0.065, -0.01])
    lines = paired.curve_markdown(gains, every=2).splitlines()
    assert lines[0] == "| student | seeds | epoch 2 | epoch 3 |"
    assert lines[2] == "| kd | 2 | +6.5 | -1.0 |"
    assert paired.curve_markdown({}) == ""


@pytest.mark.fast
def test_a_run_trained_under_another_name_is_taken_over_only_when_the_same(tmp_path):
    """When the shipped default changes, ``default`` reuses the named student that already ran its configuration."""
    job = {"name": "mimic-off", "seed": 1, "spec": {"loss": "mimic", "distill_off_epochs": "close_mosaic"},
           "model": "yolov8n.yaml", "epochs": 30, "imgsz": 160, "batch": 16, "device": "cpu", "workers": 0,
           "data": "/d/data.yaml", "teacher": "/t/best.pt", "dir": str(tmp_path / "mimic-off-e30-s1-abc")}  # fmt: skip
    train = Path(job["dir"]) / "train"
    train.mkdir(parents=True)
    config = accuracy.resolved_config(job)
    (train / "distill.json").write_text(json.dumps({"config": {**config, "teacher": job["teacher"]}}))
    (train / "results.csv").write_text("epoch, train/box_loss, train/mimic_loss, metrics/mAP50-95(B)\n1, 3, 1, 0.2\n")
    result = {"job": job, "best": str(train / "weights" / "best.pt"), "test": {"metrics/mAP50-95(B)": 0.33},
              "val": {}, "train_s": 5.0}  # fmt: skip
    (Path(job["dir"]) / "result.json").write_text(json.dumps(result))

    same = dict(job, name="default", spec={"distill_off_epochs": "close_mosaic"}, dir=str(tmp_path / "default-x"))
    twin = accuracy.same_run(same)
    assert twin["test"] == {"metrics/mAP50-95(B)": 0.33} and twin["same_as"] == "mimic-off-e30-s1-abc"
    assert twin["job"] == same and twin["config"] == config and twin["val_curve"] == [0.2]
    assert twin["kd_share"] == {"first_epoch": 0.25, "last_epoch": 0.25}
    assert accuracy.run_record(twin)["same_as"] == "mimic-off-e30-s1-abc"
    assert accuracy.same_run(dict(same, seed=2)) is None  # another seed
    assert accuracy.same_run(dict(same, spec={"distill_off_epochs": 0})) is None  # another KD configuration
    assert accuracy.same_run(dict(same, spec=None, teacher=None)) is None  # plain training is not that run
    spelled = dict(job, spec={**job["spec"], "logit": True})  # the same config written out: its own run, not a new one
    assert accuracy.same_run(spelled)["test"] == {"metrics/mAP50-95(B)": 0.33} and "same_as" not in accuracy.same_run(
        spelled
    )


@pytest.mark.fast
def test_a_teacher_given_every_label_is_the_plain_run_on_the_full_set_and_never_trained_over_it(tmp_path):
    """``--teacher-labels all`` takes the teacher trained without ``--label-fraction``; a folder holding a finished
    run of other settings is set aside before anything trains there (it once overwrote that teacher's weights)."""
    plain = {"name": "teacher", "seed": 0, "spec": None, "model": "yolov8s-pose.yaml", "epochs": 60, "imgsz": 256,
             "batch": 16, "device": "cpu", "workers": 0, "teacher": None, "data": "/full/data.yaml",
             "dir": str(tmp_path / "teacher-e60-full")}  # fmt: skip
    folder = Path(plain["dir"])
    (folder / "train" / "weights").mkdir(parents=True)
    (folder / "train" / "weights" / "best.pt").write_bytes(b"the teacher")
    (folder / ".lock").touch()
    (folder / "result.json").write_text(json.dumps({"job": plain, "test": {"metrics/mAP50-95(B)": 0.89}}))
    every_label = dict(plain, spec="all-labels", data="/part/data.yaml", full_data="/full/data.yaml")
    assert accuracy.same_run(every_label)["test"] == {"metrics/mAP50-95(B)": 0.89}  # its own folder: the same run
    ceiling = dict(every_label, name="ceiling", dir=str(tmp_path / "ceiling-e60-part"))
    assert accuracy.same_run(ceiling)["same_as"] == "teacher-e60-full"  # found by content in another folder
    assert accuracy.same_run(dict(every_label, full_data="/other/data.yaml")) is None
    assert accuracy.same_run(dict(plain, data="/part/data.yaml")) is None  # plain training on the part is not it

    assert accuracy.set_aside(Path(ceiling["dir"])) is None  # nothing finished there: nothing to move
    aside = accuracy.set_aside(folder)
    assert aside == tmp_path / "teacher-e60-full~1" and (aside / "train" / "weights" / "best.pt").read_bytes() == (
        b"the teacher")  # fmt: skip
    assert sorted(p.name for p in folder.iterdir()) == [".lock"]  # the lock stays with the job that holds it
    assert accuracy.same_run(every_label)["same_as"] == "teacher-e60-full~1"  # still found, by content
    (folder / "result.json").write_text(json.dumps({"job": dict(plain, epochs=30)}))
    assert accuracy.set_aside(folder).name == "teacher-e60-full~2"


@pytest.mark.fast
def test_phase_gains_pair_each_seeds_mean_over_the_span():
    """The phase comparison is a paired t-interval over per-seed means of the val curve, checked against scipy."""
    from scipy import stats

    from benchmarks import paired

    base = {0: [0.1, 0.2, 0.30, 0.40], 1: [0.1, 0.3, 0.30, 0.50], 2: [0.0, 0.2, 0.25, 0.45]}
    kd = {0: [0.1, 0.3, 0.35, 0.40], 1: [0.1, 0.3, 0.40, 0.50], 2: [0.0, 0.2, 0.30, 0.44]}
    runs = [{"name": "baseline", "seed": s, "val_curve": c} for s, c in base.items()]
    runs += [{"name": "kd", "seed": s, "val_curve": c} for s, c in kd.items()]
    g = paired.span_gains(runs, ["baseline", "kd"], 2, 3)["kd"]
    mid = [sum(kd[s][1:3]) / 2 for s in range(3)], [sum(base[s][1:3]) / 2 for s in range(3)]
    ci = stats.ttest_rel(*mid).confidence_interval(0.95)
    assert g["gains"] == pytest.approx([0.075, 0.05, 0.025]) and g["wins"] == 3
    assert g["ci"] == pytest.approx([ci.low, ci.high], abs=1e-4)
    assert accuracy.phases(30) == [(11, 20), (21, 30)]  # the BCCD profile: mosaic epochs after warm-up, then closed


@pytest.mark.fast
def test_paired_gain_matches_a_paired_t_test():
    from scipy import stats

    from benchmarks import paired

    student = {0: 0.312, 1: 0.298, 2: 0.305, 3: 0.320, 4: 0.301, 7: 0.5}  # seed 7 has no baseline: left out
    base = {0: 0.300, 1: 0.301, 2: 0.290, 3: 0.303, 4: 0.296, 5: 0.1}
    r = paired.paired_gain(student, base)
    seeds = [0, 1, 2, 3, 4]
    ci = stats.ttest_rel([student[s] for s in seeds], [base[s] for s in seeds]).confidence_interval(0.95)
    assert r["seeds"] == seeds and r["n"] == 5 and r["wins"] == 4
    assert r["gains"] == [0.012, -0.003, 0.015, 0.017, 0.005]
    assert r["mean"] == pytest.approx(0.0092, abs=1e-4)
    assert r["ci"] == pytest.approx([ci.low, ci.high], abs=1e-4)
    one = paired.paired_gain({0: 0.3}, {0: 0.2})
    assert (one["n"], one["ci"], one["sd"], one["wins"]) == (1, None, None, 1)
    assert paired.paired_gain({}, base)["mean"] is None


@pytest.mark.fast
def test_paired_markdown_lists_seeds_gain_ci_and_wins():
    from benchmarks import paired

    runs = [{"name": n, "seed": s, "test": {"m": v}} for n, vals in
            {"baseline": (0.30, 0.31), "default": (0.32, 0.325), "other": (0.29, 0.30)}.items()
            for s, v in enumerate(vals)]  # fmt: skip
    table = paired.markdown(runs, ["baseline", "default", "other"], "m", default="default")
    lines = table.splitlines()
    assert lines[0] == "| student | seed 0 | seed 1 | mean gain | 95% CI | wins |"
    assert lines[2] == "| baseline | 30.0 | 31.0 | | | |"
    assert lines[3].startswith("| **default** (default) | 32.0 | 32.5 | +1.75 | ") and lines[3].endswith(" | 2/2 |")
    assert lines[4].startswith("| other | 29.0 | 30.0 | -1.00 | -1.0 … -1.0 | 0/2 |")


@pytest.mark.fast
def test_accuracy_run_records_are_repository_relative(tmp_path):
    result = {"job": {"name": "default", "seed": 3, "spec": {}, "epochs": 30, "imgsz": 160,
                      "dir": str(ROOT / "benchmarks" / ".work" / "x"), "teacher": str(tmp_path / "t.pt")},
              "test": {"metrics/mAP50-95(B)": 0.3}, "val": {}, "train_s": 1.0}  # fmt: skip
    record = accuracy.run_record(result)
    assert record["dir"] == "benchmarks/.work/x" and record["teacher"] == "t.pt"  # no folder of this machine
    assert accuracy.run_record(result, tmp_path)["teacher"] == "<workdir>/t.pt"
    assert (record["name"], record["seed"], record["test"]) == ("default", 3, {"metrics/mAP50-95(B)": 0.3})


@pytest.mark.fast
def test_runs_of_a_committed_report_are_reused_only_when_the_same(tmp_path):
    """--reuse takes over a run from an earlier report (another machine, no work folder) only if nothing differs."""
    job = {"name": "default", "seed": 1, "spec": {}, "model": "yolov8n.yaml", "epochs": 30, "imgsz": 160,
           "batch": 16, "device": "cpu", "workers": 0, "data": "/elsewhere/data.yaml", "teacher": "/elsewhere/t.pt",
           "dir": "/elsewhere/.work/default-e30-s1-abc"}  # fmt: skip
    config = accuracy.resolved_config(job)
    result = {"job": job, "test": {"metrics/mAP50-95(B)": 0.31}, "val": {}, "train_s": 9.0, "config": config,
              "kd_share": {"first_epoch": 0.2, "last_epoch": 0.2}, "val_curve": [0.1, 0.3]}  # fmt: skip
    (tmp_path / "old.json").write_text(json.dumps({"runs": [accuracy.run_record(result)], "teacher": {"test": {}}}))
    runs, teacher = accuracy.reusable_runs([tmp_path / "old.json"])
    here = dict(job, data=str(tmp_path / "data.yaml"), teacher=None, dir=str(tmp_path / "default-e30-s1-abc"))
    reused = accuracy.reuse(here, runs)
    assert reused["test"] == {"metrics/mAP50-95(B)": 0.31} and reused["cached"] is True and teacher == {"test": {}}
    assert reused["val_curve"] == [0.1, 0.3] and accuracy.run_record(reused)["val_curve"] == [0.1, 0.3]
    assert accuracy.run_record(reused)["reused_from"] == "old.json"
    assert accuracy.reuse(dict(here, epochs=31), runs) is None
    assert accuracy.reuse(dict(here, seed=2), runs) is None
    assert accuracy.reuse(dict(here, dir=str(tmp_path / "default-e30-s1-otherdata")), runs) is None
    spelled = dict(here, spec={"loss": "mimic"})  # the defaults spelled out are the same run
    assert accuracy.reuse(spelled, runs)["test"] == {"metrics/mAP50-95(B)": 0.31}
    assert accuracy.reuse(dict(here, spec=None), runs) is None  # plain training is another run
    runs[("default", 1)]["config"] = dict(config, logit_weight=9.0)  # the default changed since: train again
    assert accuracy.reuse(here, runs) is None


@pytest.mark.fast
def test_label_split_keeps_labels_on_a_fixed_share_and_pools_the_rest(tmp_path):
    from benchmarks.label_split import label_split
    from distill.data.dataset_files import split_images
    from distill.data.synthetic import generate

    data = generate(tmp_path / "set", "detect", images=12, val=3, test=3, size=32, seed=0)
    labelled, pool, digest = label_split(Path(data), "hash", 0.25, tmp_path / "work")
    again = label_split(Path(data), "hash", 0.25, tmp_path / "other")
    kept = sorted(Path(p).name for p in split_images(str(labelled.parent / "images" / "train")))
    assert digest == again[2] and kept == sorted(Path(p).name for p in split_images(str(again[0].parent / "images"
                                                                                              / "train")))  # fmt: skip
    pooled = sorted(p.name for p in pool.iterdir())
    everything = sorted(Path(p).name for p in split_images(str(Path(data).parent / "images" / "train")))
    assert len(kept) == 3 and sorted(kept + pooled) == everything and not set(kept) & set(pooled)
    assert not any(p.suffix == ".txt" for p in pool.rglob("*"))  # the pool carries no labels
    assert sorted(p.stem for p in (labelled.parent / "labels" / "train").iterdir()) == [Path(k).stem for k in kept]
    import yaml

    spec = yaml.safe_load(labelled.read_text())
    assert Path(spec["val"]).samefile(Path(data).parent / "images" / "val")  # val/test stay the full set's
    with pytest.raises(SystemExit, match="must be in"):
        label_split(Path(data), "hash", 1.0, tmp_path / "work")


@pytest.mark.fast
def test_pool_students_need_a_label_fraction():
    with pytest.raises(SystemExit, match="needs --label-fraction"):
        accuracy.chosen_students(accuracy.arg_parser().parse_args(["--students", "baseline,pool"]))
    with pytest.raises(SystemExit, match="needs --label-fraction"):
        accuracy.chosen_students(accuracy.arg_parser().parse_args(["--variant", "p:unlabeled=true,pseudo_conf=0.3"]))
    args = accuracy.arg_parser().parse_args(["--label-fraction", "0.25"])
    assert list(accuracy.chosen_students(args)) == list(accuracy.POOL_TABLE)
    with pytest.raises(SystemExit, match="label_then_train=true needs --label-fraction"):
        accuracy.chosen_students(accuracy.arg_parser().parse_args(["--variant", "l:label_then_train=true"]))
    with pytest.raises(SystemExit, match="label_then_train takes only pseudo_conf, unlabeled_ratio, not loss"):
        accuracy.parse_variant("l:label_then_train=true,loss=cwd")
    with pytest.raises(SystemExit, match="unlabeled_ratio"):
        accuracy.parse_variant("l:label_then_train=true,unlabeled_ratio=-1")


@pytest.mark.fast
def test_a_label_then_train_variant_is_the_control_of_a_pool_variant(tmp_path, monkeypatch):
    """Same pseudo-label settings as the pool variant it controls, trained plain; paired with every pool row."""
    monkeypatch.setattr(accuracy.plan, "score_split", lambda data: "test")
    _, jobs = _plan(tmp_path, "--students", "baseline,label-then-train",
                    "--variant", "p1:unlabeled=true,unlabeled_ratio=1",
                    "--variant", "l1:label_then_train=true,unlabeled_ratio=1")  # fmt: skip
    by_name = {j["name"]: j for j in jobs if j["seed"] == 0}
    shipped = {k: accuracy.DEFAULTS[k] for k in accuracy.PSEUDO_SETTINGS}
    assert by_name["label-then-train"]["spec"] == by_name["l1"]["spec"] == "pseudo"
    assert {k: by_name["label-then-train"][k] for k in shipped} == shipped
    assert by_name["l1"]["unlabeled_ratio"] == 1 and by_name["l1"]["pseudo_conf"] == shipped["pseudo_conf"]
    assert by_name["l1"]["pool"] == by_name["p1"]["pool"] == str(tmp_path / "pool")
    assert accuracy.job_key(by_name["l1"]) != accuracy.job_key(by_name["label-then-train"])  # other runs
    runs = [{"name": j["name"], "seed": j["seed"], "spec": j["spec"] if j["name"] != "p1" else {"unlabeled": True},
             "test": {accuracy.METRIC: 0.1 * (i + 1)}} for i, j in enumerate(jobs)]  # fmt: skip
    pairs = accuracy.pool_comparisons(runs, ["baseline", "label-then-train", "p1", "l1"], accuracy.METRIC)
    assert sorted(pairs) == ["p1 vs l1", "p1 vs label-then-train"] and pairs["p1 vs l1"]["n"] == 2


@pytest.mark.fast
def test_a_variant_with_its_own_epochs_is_the_equal_compute_control(tmp_path, monkeypatch):
    """``epochs=N`` on a variant: that student trains N epochs (its own run), the others the run's."""
    monkeypatch.setattr(accuracy.plan, "score_split", lambda data: "test")
    _, jobs = _plan(tmp_path, "--students", "baseline", "--epochs", "40",
                    "--variant", "l52:label_then_train=true,unlabeled_ratio=1,epochs=52",
                    "--variant", "p:unlabeled=true,pool_targets=online")  # fmt: skip
    by_name = {j["name"]: j for j in jobs if j["seed"] == 0}
    assert by_name["l52"]["epochs"] == 52 and "-e52-" in by_name["l52"]["dir"] and by_name["l52"]["spec"] == "pseudo"
    assert by_name["baseline"]["epochs"] == by_name["p"]["epochs"] == 40 and "epochs" not in by_name["p"]["spec"]
    with pytest.raises(SystemExit, match="epochs must be a whole number"):
        accuracy.parse_variant("l0:label_then_train=true,epochs=0")


def _plan(tmp_path: Path, *argv: str) -> tuple[dict, list[dict]]:
    """The jobs ``python -m benchmarks.accuracy --label-fraction 0.25 <argv>`` would run (no dataset is read)."""
    args = accuracy.arg_parser().parse_args(["--label-fraction", "0.25", "--seeds", "0,1", *argv])
    profile, seeds, epochs, teacher_tag = accuracy.profile_settings(args)
    sets = accuracy.Datasets(tmp_path / "part.yaml", "parthash", tmp_path / "all.yaml", "allhash", tmp_path / "pool")
    students = accuracy.chosen_students(args)
    return accuracy.plan_jobs(args, profile, sets, students, seeds, epochs, teacher_tag, tmp_path)


@pytest.mark.fast
def test_a_teacher_on_every_label_makes_its_students_other_runs(tmp_path, monkeypatch):
    monkeypatch.setattr(accuracy.plan, "score_split", lambda data: "test")
    teacher, students = _plan(tmp_path)
    assert teacher["spec"] is None and teacher["data"] == str(tmp_path / "part.yaml")
    assert teacher["dir"].endswith("-parthash") and "full_data" not in teacher
    strong, strong_students = _plan(tmp_path, "--teacher-labels", "all")
    assert strong["spec"] == "all-labels" and strong["full_data"] == str(tmp_path / "all.yaml")
    assert strong["dir"].endswith("-allhash") and strong["dir"] != teacher["dir"]
    for weak, other in zip(students, strong_students, strict=True):
        learns = weak["spec"] not in (None, "all-labels")  # the students that learn from the teacher
        assert ("-tall-" in other["dir"]) == learns and (weak["dir"] == other["dir"]) == (not learns)
        assert weak["data"] == other["data"] == str(tmp_path / "part.yaml")  # every student sees the labelled part
    assert [(j["name"], j["seed"]) for j in students[:2]] == [("baseline", 0), ("default", 0)]  # seed-major
    assert all("cache" not in j for j in students)  # runs without --cache keep the keys they had
    _, cached = _plan(tmp_path, "--cache", "--workers", "2")
    assert all(j["cache"] == "ram" and j["workers"] == 2 for j in cached)
    assert accuracy.job_key(cached[0]) != accuracy.job_key(students[0])  # cache=ram runs are other runs


@pytest.mark.fast
def test_the_report_of_finished_runs_trains_nothing(tmp_path, monkeypatch):
    """``--finished-only``: the runs with a result, the teacher's, and nothing for runs that never finished."""
    monkeypatch.setattr(accuracy.plan, "score_split", lambda data: "test")
    teacher, students = _plan(tmp_path, "--students", "baseline,pool")
    Path(teacher["dir"]).mkdir(parents=True)
    best = str(Path(teacher["dir"]) / "train" / "weights" / "best.pt")
    (Path(teacher["dir"]) / "result.json").write_text(json.dumps({"job": teacher, "best": best, "train_s": 9}))
    done = [students[0], dict(students[1], teacher=best)]  # baseline and pool of seed 0; seed 1 never finished
    for job in done:
        Path(job["dir"]).mkdir(parents=True)
        (Path(job["dir"]) / "result.json").write_text(json.dumps({"job": job, "train_s": 5, "test": {}, "val": {}}))
    monkeypatch.setattr(accuracy.cache, "ran_config", lambda folder, pool=False: accuracy.resolved_config(done[1]))
    finished, got_teacher = accuracy.finished_runs(teacher, students, [])
    assert [(r["job"]["name"], r["job"]["seed"]) for r in finished] == [("baseline", 0), ("pool", 0)]
    assert got_teacher["best"] == best and not any(Path(j["dir"], "train").exists() for j in students)


def test_latency_proxy_delays_and_counts_each_request():
    """The data benchmark's link: one delay per request (not per packet), every request counted, loopback only."""
    import http.server
    import threading
    import time
    import urllib.request

    from benchmarks.latency_proxy import LatencyProxy

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with LatencyProxy(("127.0.0.1", server.server_port), delay_s=0.1) as proxy:
            url = f"http://127.0.0.1:{proxy.port}/README.md"
            start = time.perf_counter()
            for _ in range(3):
                assert b"yolo-distill" in urllib.request.urlopen(url, timeout=10).read()
            elapsed = time.perf_counter() - start
        assert proxy.count() == 3 and 0.3 <= elapsed < 2.0
        with pytest.raises(ValueError, match="delay_s"):
            LatencyProxy(("127.0.0.1", 1), delay_s=5)
    finally:
        server.shutdown()


def test_data_benchmark_smoke(tmp_path):
    """A real run: both layouts published and fetched through the proxy against the project's own S3 server."""
    proc = _bench("benchmarks.data", "--profile", "quick", "--sizes", "12", "--delays", "0", "--workdir",
                  str(tmp_path / "work"), "--results", str(tmp_path))  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    (path,) = tmp_path.glob("data-quick-*.json")
    report = json.loads(path.read_text())
    (row,) = report["sizes"]
    link = row["links"]["0ms"]
    assert row["files"] == 2 * 12 + 1  # images, labels and data.yaml
    assert link["fetch_old"]["requests"] >= row["files"] > link["fetch_shards"]["requests"]
    assert link["fetch_shards_val_test"]["requests"] < link["fetch_shards"]["requests"]  # no train shard
    assert set(report["ratios"]["12"]["0ms"]) == {
        "fetch_speedup", "publish_speedup", "prepare_data_speedup", "fetch_over_one_object",
        "fetch_over_one_object_and_untar",
    }  # fmt: skip
    assert row["import_s"] > 0 and "| 12 (25, " in data.markdown(report)
    only_new = {**report, "sizes": [{**row, "links": {"0ms": {k: v for k, v in link.items() if "old" not in k}}}]}
    assert "| — → " in data.markdown(only_new) and "fetch_speedup" not in data.ratios(only_new["sizes"][0])["0ms"]


@pytest.mark.fast
def test_a_pool_row_resolves_as_the_run_does_and_runs_from_before_pool_kd_pair_with_pool_kd_rows():
    """Today a detect pool row without ``pool_kd`` is label-then-train; a KD pool run recorded before the setting
    existed is what ``pool_kd=true`` trains now, so it pairs with that row and never with the default one."""
    job = {"spec": {"unlabeled": True, "unlabeled_ratio": 1}, "teacher": None, "model": "yolov8n.yaml"}
    default = accuracy.resolved_config(job)
    assert (default["loss"], default["logit"], default["pool_kd"]) == ("none", False, False)
    kd = accuracy.resolved_config({**job, "spec": {**job["spec"], "pool_kd": True}})
    old = {k: v for k, v in kd.items() if k != "pool_kd"}  # a record from before pool_kd, with the KD terms on
    assert accuracy.completed_config(old, pool=True) == kd != default
    plain = accuracy.resolved_config({**job, "spec": {}})  # no pool: pool_kd means nothing
    assert plain["pool_kd"] is None and accuracy.completed_config(old, pool=False) == plain
