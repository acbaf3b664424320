"""Accuracy benchmark: which student comes out best — baseline, our KD variants, or Ultralytics' own KD — by seed.

One teacher (trained once per setting and cached), then every student from scratch with the same epochs, image size,
batch and seeds, each in its own process (Ultralytics trains on one CPU thread, so ``--jobs`` runs side by side).
For every seed the baseline and each KD student start from that seed, so the comparison is paired: the report gives
per seed scores, the mean paired gain over the baseline with its 95% t-interval, and wins out of seeds. Every student
is scored on the held-out *test* split with the evaluate step's own ``measure`` (best.pt picked on val, as training
does). Detect runs on BCCD (``--data-root``); segment and pose (``--task``) on synthetic sets made here.

Usage::

    python -m benchmarks.accuracy --profile quick            # smoke, ≲ 10 min on 2 CPU cores
    python -m benchmarks.accuracy --profile screen           # every student, one seed: picks the candidates
    python -m benchmarks.accuracy                            # --profile cpu: the deciding five-seed table
    python -m benchmarks.accuracy --profile demo             # make demo's regime, three seeds
    python -m benchmarks.accuracy --task pose --students baseline,default  # a synthetic pose table
    python -m benchmarks.accuracy --profile full --device 0  # longer runs, GPU
    python -m benchmarks.accuracy --profile screen --variant cwd-w3:loss=cwd,logit=0,feat_weight=3  # a tuning try
    python -m benchmarks.accuracy --label-fraction 0.25 --students baseline \
        --variant pool-r1:unlabeled=true,unlabeled_ratio=1 \
        --variant label-then-train-ratio1:label_then_train=true,unlabeled_ratio=1  # a pool setting and its control

Finished runs are kept under ``--workdir`` and skipped when the same run is asked for again, so an interrupted
benchmark picks up where it stopped; ``--reuse REPORT`` takes over the runs of a committed report (another machine,
an earlier session). The report goes to ``benchmarks/results/accuracy-<profile>-<date>.json``.

After training, each model is timed per image on ``--device`` (the teacher, one run per student row, the best row's
ONNX export: the report's ``latency`` section) and ``accuracy-<...>-pareto.png`` drawn beside the report: test mAP
against inference time (:mod:`benchmarks.accuracy.latency`). ``--no-latency`` skips it; ``--latency-only REPORT``
adds the section to an existing report without training, with its runs' weights from ``--workdir`` where present
(else their architecture, random weights), and redraws its figures::

    python -m benchmarks.accuracy --latency-only benchmarks/results/accuracy-demo-pool-t60-online5-2026-12-07.json \
        --synthetic 288,64,64 --workdir /tmp/work --results /tmp/out   # the --synthetic / --data-root it was made with
"""

# The package, one concern a module, each importing only from those above it in this list:
#   options  profiles, students, variants and the command line (ROOT, BCCD)
#   plan     datasets (BCCD, YOLO folders, synthetic sets, the labelled part and pool) and the jobs
#   metrics  what a run's results.csv says (KD share, val curve) and the metrics compared
#   cache    which finished run is a job (work folder, other students' folders, --reuse reports)
#   run      one run per worker process; training every job, or taking the finished ones
#   tables   the report: summaries, paired gains, the printed tables
#   latency  inference time per image of the teacher, each row and an ONNX export (the Pareto chart's x)
#   cli      main(); __main__ runs it (``python -m benchmarks.accuracy``, and each ``--worker``)
# (figure, which draws a written report, imports only metrics; latency reads its scores through it.)

from benchmarks.accuracy.cache import (
    completed_config,
    finished_result,
    job_key,
    ran_config,
    relative,
    resolved_config,
    reusable_runs,
    reuse,
    same_run,
    set_aside,
    trained_as,
)
from benchmarks.accuracy.cli import main
from benchmarks.accuracy.latency import (
    architecture_weights,
    latency_only,
    latency_section,
    report_profile,
    time_per_image,
    trained_weights,
)
from benchmarks.accuracy.metrics import METRIC, TASK_LOSSES, TASK_METRIC, kd_share, phases, results_rows, val_curve
from benchmarks.accuracy.options import (
    BCCD,
    BCCD_URL,
    DECIDING,
    POOL_STUDENTS,
    POOL_TABLE,
    PROFILES,
    PSEUDO_SETTINGS,
    ROOT,
    STUDENTS,
    Profile,
    arg_parser,
    chosen_students,
    parse_variant,
    profile_settings,
)
from benchmarks.accuracy.plan import (
    DEFAULTS,
    SYNTH_IMAGES,
    Datasets,
    benchmark_dataset,
    dataset_name,
    import_bccd,
    plan_jobs,
    prepare_datasets,
    pseudo_settings,
    score_split,
    synth_dataset,
    task_model,
    work_folder,
    work_lock,
    yolo_dataset,
)
from benchmarks.accuracy.run import finished_runs, launch, reuse_first_round, run_one, train_all
from benchmarks.accuracy.tables import (
    build_report,
    markdown,
    paired_gains,
    pool_comparisons,
    pool_rows,
    report_tables,
    run_config,
    run_kd_share,
    run_record,
    run_val_curve,
    summarise,
)

__all__ = [
    # options
    "BCCD", "BCCD_URL", "DECIDING", "POOL_STUDENTS", "POOL_TABLE", "PROFILES", "PSEUDO_SETTINGS", "ROOT", "STUDENTS",
    "Profile", "arg_parser", "chosen_students", "parse_variant", "profile_settings",
    # plan (DEFAULTS: distill.config's, which a label-then-train row's pseudo-label settings default to)
    "DEFAULTS", "SYNTH_IMAGES", "Datasets", "benchmark_dataset", "dataset_name", "import_bccd", "plan_jobs",
    "prepare_datasets", "pseudo_settings", "score_split", "synth_dataset", "task_model", "work_folder", "work_lock",
    "yolo_dataset",
    # metrics
    "METRIC", "TASK_LOSSES", "TASK_METRIC", "kd_share", "phases", "results_rows", "val_curve",
    # cache
    "completed_config", "finished_result", "job_key", "ran_config", "relative", "resolved_config", "reusable_runs",
    "reuse", "same_run", "set_aside", "trained_as",
    # run
    "finished_runs", "launch", "reuse_first_round", "run_one", "train_all",
    # tables
    "build_report", "markdown", "paired_gains", "pool_comparisons", "pool_rows", "report_tables", "run_config",
    "run_kd_share", "run_record", "run_val_curve", "summarise",
    # latency
    "architecture_weights", "latency_only", "latency_section", "report_profile", "time_per_image", "trained_weights",
    # cli
    "main",
]  # fmt: skip
