"""Ultralytics behaviour this package relies on through *public* names, which an upgrade could change silently.

The order of the trainer's set-up, what its callbacks and EMA see, how the dataset passes labels through
``update_labels_info``, the assigner's arguments, the validator's per-image statistics, the error texts we read: each
entry of :data:`ASSUMPTIONS` names the Ultralytics source that must still hold (short fragments of it, in order where
the order is what we rely on) and the function of ours that relies on it. ``tests/test_seams.py`` checks every entry
against the installed Ultralytics, so an upgrade that breaks one fails in that one named test.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import ultralytics.utils as ul_utils
from ultralytics.cfg import check_cfg, check_dict_alignment
from ultralytics.data.augment import BaseMixTransform
from ultralytics.data.base import BaseDataset
from ultralytics.data.dataset import YOLODataset
from ultralytics.data.utils import check_det_dataset, verify_image_label
from ultralytics.engine.model import Model
from ultralytics.engine.predictor import BasePredictor
from ultralytics.engine.trainer import BaseTrainer
from ultralytics.engine.validator import BaseValidator
from ultralytics.nn.modules import head as ul_head
from ultralytics.nn.modules.head import Detect
from ultralytics.nn.tasks import BaseModel, torch_safe_load
from ultralytics.utils import dist as ul_dist
from ultralytics.utils import metrics as ul_metrics
from ultralytics.utils.callbacks.base import add_integration_callbacks
from ultralytics.utils.checks import check_font
from ultralytics.utils.loss import E2ELoss, v8DetectionLoss
from ultralytics.utils.metrics import DetMetrics, ap_per_class
from ultralytics.utils.nms import non_max_suppression
from ultralytics.utils.tal import TaskAlignedAssigner
from ultralytics.utils.torch_utils import ModelEMA, strip_optimizer


@dataclass(frozen=True)
class Assumption:
    """One behaviour of Ultralytics we rely on through public names, which an upgrade could change without an error.

    Attributes:
        name (str): A short name (the test's id).
        owner (Any): The Ultralytics class, function or module whose source holds it.
        fragments (tuple[str, ...]): Source fragments that must still be in ``inspect.getsource(owner)``; with
            ``ordered``, each after the one before (an order we rely on).
        site (str): Where ``distill/`` relies on it: ``module:qualname``, several separated by ``", "``.
        why (str): What we rely on, and what breaks if it changes.
        ordered (bool): Whether the fragments must appear in this order.
    """

    name: str
    owner: Any
    fragments: tuple[str, ...]
    site: str
    why: str
    ordered: bool = False


# KDModel skipping DistillationModel.__init__ is checked against the parent by CAPTURE_STATE and its tests.
ASSUMPTIONS: tuple[Assumption, ...] = (
    # -- the trainer: logging, set-up order, callbacks, validation, EMA, checkpoints
    Assumption(
        "logger-handlers",
        ul_utils.set_logging,
        ("logger.addHandler(stream_handler)", "logger.propagate = False"),
        "distill.engine.trainer:HeldLogs.__init__, distill.engine.trainer:HeldLogs.show",
        "Ultralytics prints only through LOGGER's own handlers (it does not propagate to the root logger), so swapping "
        "LOGGER.handlers holds all of its console output until the run is accepted.",
    ),
    Assumption(
        "set-model-attributes-first",
        BaseTrainer._setup_train,
        (
            "self.set_model_attributes()",
            "attempt_compile(self.model",
            "self.model.named_parameters()",
            "check_amp(self.model)",
            "nn.parallel.DistributedDataParallel(",
            "self._build_train_pipeline()",
            "self.ema = ModelEMA(self.model)",
        ),
        "distill.engine.trainer:DistillTrainerMixin.set_model_attributes",
        "the student is wrapped in the KDModel in set_model_attributes, before compile, freezing, the AMP check, the "
        "DDP wrap, the optimizer and the EMA copy; any of them moved earlier would see the bare student.",
        ordered=True,
    ),
    Assumption(
        "optimizer-from-model",
        BaseTrainer,
        ("def _build_train_pipeline(self):", "self.optimizer = self.build_optimizer(", "model=self.model,"),
        "distill.engine.trainer:DistillTrainerMixin.set_model_attributes",
        "the optimizer is built in _build_train_pipeline from self.model (the KDModel by then), so the adapters and "
        "MGD generators train.",
        ordered=True,
    ),
    Assumption(
        "teacher-frozen-by-name",
        BaseTrainer._setup_train,
        ('freeze_layer_names.append("teacher_model.")', "if any(x in k for x in freeze_layer_names):"),
        "distill.engine.model:KDModel.__init__",
        "the trainer freezes a DistillationModel's parameters named teacher_model.*: an offline teacher is registered "
        "under that name and frozen, an online one as online_teacher so that it trains.",
    ),
    Assumption(
        "callback-events",
        BaseTrainer,
        (
            'self.run_callbacks("on_train_start")',
            'self.run_callbacks("on_train_epoch_start")',
            'self.run_callbacks("on_train_batch_end")',
            'self.run_callbacks("on_fit_epoch_end")',
            'self.run_callbacks("on_model_save")',
        ),
        "distill.engine.trainer:DistillCallbacks.attach",
        "our handlers are added under these event names with setdefault: a renamed event would never call them (no KD "
        "schedule, no mean teacher, no saved online teacher) and raise nothing.",
    ),
    Assumption(
        "ddp-ranks-get-callbacks",
        ul_dist.generate_ddp_file,
        ('"callbacks": trainer.callbacks,', '_callbacks=state["callbacks"]'),
        "distill.engine.trainer:DistillCallbacks.find",
        "the DDP launcher hands trainer.callbacks to every rank's trainer: the KD config rides on them to the ranks.",
    ),
    Assumption(
        "fitness-after-validation",
        BaseTrainer,
        ("self.metrics, self.fitness = self.validate()", 'self.run_callbacks("on_fit_epoch_end")'),
        "distill.engine.trainer:DistillCallbacks.on_fit_epoch_end",
        "trainer.fitness holds this epoch's validation fitness (None where the rank did not validate) when "
        "on_fit_epoch_end runs; the auto hand-over to the mean teacher compares it with the teacher's.",
        ordered=True,
    ),
    Assumption(
        "fitness-in-results",
        DetMetrics,
        ('keys = [*self.keys, "fitness"]', "[*self.mean_results(), self.fitness]"),
        "distill.engine.trainer:teacher_fitness, distill.engine.trainer:BestThroughTrainer.__call__",
        "a validation's results are metrics.keys plus the fitness property: teacher_fitness's metrics.fitness is the "
        "number the trainer scores the student by, and BestThroughTrainer keeps exactly these keys.",
    ),
    Assumption(
        "val-returns-metrics",
        Model.val,
        ("_callbacks=self.callbacks)", "return validator.metrics"),
        "distill.engine.trainer:teacher_fitness, distill.registry.bootstrap:capture, distill.steps.evaluate:measure",
        "YOLO.val runs its validator with the model's callbacks (where capture registers) and returns "
        "validator.metrics (fitness, results_dict).",
    ),
    Assumption(
        "final-eval-calls-validator",
        BaseTrainer.final_eval,
        ("self.validator.args.plots = self.args.plots", "self.metrics = self.validator(model=model)"),
        "distill.engine.trainer:LaunchMixin.final_eval, distill.engine.trainer:BestThroughTrainer.__call__",
        "the final evaluation only sets the validator's args and calls it with best.pt, so a BestThroughTrainer put "
        "in trainer.validator stands in for it on CPU ranks.",
    ),
    Assumption(
        "trainer-validation-scores-ema",
        BaseValidator.get_model,
        ("return trainer.ema.ema if trainer is not None",),
        "distill.engine.trainer:BestThroughTrainer.__call__",
        "validating with trainer= scores trainer.ema.ema: loading best.pt's weights into it is what makes the CPU "
        "ranks' final metrics best.pt's.",
    ),
    Assumption(
        "ema-drops-teacher",
        ModelEMA,
        ('if hasattr(self.ema, "teacher_model"):', "self.ema.teacher_model = None"),
        "distill.engine.model:KDModel.teacher_model",
        "the EMA copy drops the teacher by assigning None to teacher_model; KDModel's setter routes that to whichever "
        "name holds it (online_teacher too), so EMA, validation and checkpoints carry no teacher.",
    ),
    Assumption(
        "ema-steps",
        ModelEMA,
        (
            "def __init__(self, model, decay=0.9999, tau=2000, updates=0):",
            "self.decay = lambda x: decay * (1 - math.exp(-x / tau))",
            "self.updates += 1",
        ),
        "distill.engine.online_pool:EMATeacher.start, distill.engine.trainer:DistillCallbacks.on_train_batch_end",
        "the mean teacher is a ModelEMA with tau=1 (its decay is ema_decay from the first update); updates counts "
        "EMA steps, which on_train_batch_end follows to move the mean teacher once per optimizer step.",
    ),
    Assumption(
        "batch-end-after-step",
        BaseTrainer,
        (
            "self.optimizer_step()",
            'self.run_callbacks("on_train_batch_end")',
            "def optimizer_step(self):",
            "self.ema.update(self.model)",
        ),
        "distill.engine.trainer:DistillCallbacks.on_train_batch_end",
        "on_train_batch_end runs after the batch's optimizer step, which updates the trainer's EMA (every batch runs "
        "it, stepped or not: trainer.ema.updates tells which).",
        ordered=True,
    ),
    Assumption(
        "nan-recovery-projector",
        BaseTrainer,
        ("model.projector.load_state_dict(ema.projector.state_dict())",),
        "distill.engine.model:KDModel.projector",
        "NaN recovery restores a DistillationModel's student and .projector from last.pt; KDModel.projector views the "
        "adapters and generators so that it restores them instead of failing.",
    ),
    Assumption(
        "checkpoints-hold-the-student",
        strip_optimizer,
        ('x["model"] = x["model"].student_model',),
        "distill.engine.api:distill",
        "the final best.pt/last.pt hold the student alone: a plain YOLO checkpoint that evaluate, export and serving "
        "load with YOLO(path).",
    ),
    Assumption(
        "teacher-fuse",
        BaseModel.fuse,
        (
            "m.conv = fuse_conv_and_bn(m.conv, m.bn)",
            "m.forward = m.forward_fuse",
            "if isinstance(m, Detect):",
            "m.fuse()",
        ),
        "distill.engine.model:build_kd_model",
        "fusing the frozen teacher folds Conv+BN in place (same outputs, same layers for the hooks) and calls its "
        "head's fuse.",
        ordered=True,
    ),
    Assumption(
        "head-fuse-branches",
        Detect.fuse,
        ('if name.startswith("one2one_"):', "setattr(self, name[8:] if end2end else name, None)"),
        "distill.engine.model:build_kd_model",
        "a head's fuse drops its one2one_* branches, or for an end-to-end head the one-to-many branch the KD reads: "
        "build_kd_model fuses only heads that are not end2end.",
    ),
    # -- the soft and online pool: the dataset and the loss's assigner
    Assumption(
        "labels-through-update",
        BaseDataset,
        (
            "return self.transforms(self.get_image_and_label(index))",
            "label = deepcopy(self.labels[index])",
            "return self.update_labels_info(label)",
        ),
        "distill.engine.soft_pool:mark_pool_instances, distill.engine.online_pool:mark_pool_regions",
        "every image's label is a deep copy that passes through the instance's update_labels_info before "
        "augmentation, so replacing that attribute marks pool objects without touching the cached labels.",
    ),
    Assumption(
        "mix-tiles-through-update",
        BaseMixTransform,
        ("mix_labels = [self.dataset.get_image_and_label(i) for i in indexes]",),
        "distill.engine.soft_pool:mark_pool_instances, distill.engine.online_pool:mark_pool_regions",
        "mosaic, mixup and cutmix load their other tiles the same way, so pool tiles are marked too (else they would "
        "train as labelled).",
    ),
    Assumption(
        "raw-label-keys",
        YOLODataset.update_labels_info,
        (
            'bboxes = label.pop("bboxes")',
            'segments = label.pop("segments", [])',
            'keypoints = label.pop("keypoints", None)',
            'bbox_format = label.pop("bbox_format")',
            'normalized = label.pop("normalized")',
        ),
        "distill.engine.online_pool:PoolRegions.__call__",
        "PoolRegions rewrites these raw label keys before the dataset builds Instances from them; renamed, a pool "
        "image would keep its pseudo-labels instead of its region.",
    ),
    Assumption(
        "assigner-arguments",
        v8DetectionLoss,
        (
            "= self.assigner(",
            "pred_scores.detach().sigmoid(),",
            "anchor_points * stride_tensor,",
            "gt_labels,",
            "gt_bboxes,",
            "mask_gt,",
        ),
        "distill.engine.soft_pool:IgnoreSoftTargets.__call__",
        "the loss calls its assigner with (scores, boxes, anchors, gt_labels, gt_bboxes, mask_gt) positionally: the "
        "wrapper's args[2] is gt_labels, whose (images, slots) shape lays out the soft flags.",
        ordered=True,
    ),
    Assumption(
        "assigner-outputs",
        TaskAlignedAssigner,
        (
            "def forward(self, pd_scores, pd_bboxes, anc_points, gt_labels, gt_bboxes, mask_gt, **extra):",
            "return target_labels, target_bboxes, target_scores, fg_mask.bool(), target_gt_idx",
        ),
        "distill.engine.soft_pool:IgnoreSoftTargets.__call__",
        "the wrapper unpacks these five outputs and takes soft objects' anchors (by target_gt_idx) out of fg_mask "
        "and target_scores.",
    ),
    Assumption(
        "criterion-layout",
        v8DetectionLoss,
        ("self.assigner = TaskAlignedAssigner(", "out[batch_idx, within_idx] = targets[:, 1:]"),
        "distill.engine.soft_pool:assigners, distill.engine.soft_pool:per_image_flags",
        "a criterion keeps its assigner as .assigner, and preprocess lays each image's targets out in row order, as "
        "per_image_flags lays out the soft flags.",
    ),
    Assumption(
        "end2end-criteria",
        E2ELoss,
        ("self.one2many = loss_fn(model", "self.one2one = loss_fn(model"),
        "distill.engine.soft_pool:assigners",
        "an end-to-end head's criterion holds its two criteria under these names, and both assigners are wrapped.",
    ),
    Assumption(
        "criterion-made-once",
        BaseModel.loss,
        ('if getattr(self, "criterion", None) is None:', "self.criterion = self.init_criterion()"),
        "distill.engine.soft_pool:soft_batch",
        "soft_batch builds the criterion as loss() would on its first call; loss() then keeps it, with the wrapped "
        "assigner.",
    ),
    Assumption(
        "nms-rows",
        non_max_suppression,
        (
            "x[:, :4] = xywh2xyxy(x[:, :4])",
            "box, cls, mask = x.split((4, nc, extra), 1)",
            "x = torch.cat((box, conf, j.float(), mask), 1)[filt]",
        ),
        "distill.engine.online_pool:online_batch, distill.engine.online_pool:_targets",
        "a detection row is x1 y1 x2 y2, conf, class, then the extra channels (mask coefficients, keypoints): "
        "online targets slice it by position.",
    ),
    Assumption(
        "head-output-names",
        ul_head,
        (
            'return {"boxes": boxes, "scores": scores, "feats": x}',
            'preds = {"one2many": preds, "one2one": one2one}',
            'preds["mask_coefficient"] = ',
            'preds["kpts"] = ',
        ),
        "distill.losses.logit:head_dict, distill.losses.logit:head_outputs",
        "the logit losses compare head outputs by these keys, on the one2many branch of end-to-end heads.",
    ),
    # -- validation statistics (the bootstrap, evaluate)
    Assumption(
        "val-batch-end-before-aggregation",
        BaseValidator.__call__,
        ("self.update_metrics(preds, batch)", 'self.run_callbacks("on_val_batch_end")', "stats = self.get_stats()"),
        "distill.registry.bootstrap:capture",
        "on_val_batch_end runs after each batch's statistics are added and before get_stats aggregates and clears "
        "them, so its last call sees every image's.",
        ordered=True,
    ),
    Assumption(
        "per-image-stats",
        ul_metrics,
        (
            '"tp": [], "conf": [], "pred_cls": [], "target_cls": []',
            'self.stats["tp_m"] = []',
            'self.stats["tp_p"] = []',
            "self.stats[k].append(stat[k])",
        ),
        "distill.registry.bootstrap:capture",
        "validator.metrics.stats holds one array per image under these keys (tp_m masks, tp_p keypoints): the "
        "bootstrap resamples images from them.",
    ),
    Assumption(
        "ap-per-class-outputs",
        ap_per_class,
        ("return tp, fp, p, r, f1, ap, unique_classes.astype(int)",),
        "distill.registry.bootstrap:ImageStats._ap",
        "out[5] is the AP per class and IoU threshold, out[6] its classes.",
    ),
    Assumption(
        "map-metric-names",
        ul_metrics,
        (
            '"metrics/mAP50(B)"',
            '"metrics/mAP50-95(B)"',
            '"metrics/mAP50(M)"',
            '"metrics/mAP50-95(M)"',
            '"metrics/mAP50(P)"',
            '"metrics/mAP50-95(P)"',
        ),
        "distill.steps.evaluate:measure",
        "evaluate reads results_dict by these names with a default of 0.0: renamed, every model would score 0 "
        "without an error.",
    ),
    # -- Ultralytics' error text we read, and the environment it reads
    Assumption(
        "refused-checkpoint-text",
        torch_safe_load,
        ("if safe_only and isinstance(e, pickle.UnpicklingError):", "references types outside the supported"),
        "distill.engine.model:read_checkpoint",
        "a restricted load refusing a pickle global is a TypeError with this text (a damaged file gets another): the "
        "only way to tell a refused file (hint: the trust opt-out) from a broken one.",
    ),
    Assumption(
        "unknown-argument-text",
        check_dict_alignment,
        ("is not a valid YOLO argument.", "raise SyntaxError(string)"),
        "distill.engine.api:_run",
        "an unknown training argument is a SyntaxError with one such line per key, then the CLI help; _run keeps "
        "those lines as its one error line.",
    ),
    Assumption(
        "argument-errors",
        check_cfg,
        ("raise TypeError(", "raise ValueError("),
        "distill.config:check_arguments",
        "a bad argument value is a TypeError or ValueError whose first line says why; those two are caught.",
    ),
    Assumption(
        "dataset-errors",
        check_det_dataset,
        ("raise SyntaxError(", "raise FileNotFoundError("),
        "distill.data.dataset_files:resolve_dataset",
        "a bad dataset yaml is one of the errors caught there, its first line the reason.",
    ),
    Assumption(
        "corrupt-label-text",
        verify_image_label,
        (
            "im_file, lb_file, prefix, keypoint, num_cls, nkpt, ndim, single_cls = args",
            'ignoring corrupt image/label: {e}"',
            "return [None, None, None, None, None, nm, nf, ne, nc, msg]",
        ),
        "distill.data.dataset_files:verify_split",
        "verify_split passes the arguments in this order and reads a refusal as a None first item, the reason after "
        "'ignoring corrupt image/label: ' in the last.",
    ),
    Assumption(
        "environment-read",
        ul_utils,
        (
            'SAFE_LOAD = env_bool("ULTRALYTICS_SAFE_LOAD")',
            'if env_bool("YOLO_OFFLINE"):',
            'os.getenv("YOLO_CONFIG_DIR")',
        ),
        "distill.offline:configure",
        "the variables configure sets are the ones Ultralytics reads; renamed, loading would silently be unrestricted "
        "or Ultralytics online.",
    ),
    Assumption(
        "integration-switches",
        add_integration_callbacks,
        ('for key in ("clearml", "comet", "dvc", "mlflow", "raytune", "tensorboard", "wandb"):',),
        "distill.offline:_settings_off",
        "the logger integrations a trainer loads are these settings, all switched off; a new one would be on.",
    ),
    Assumption(
        "per-image-speed",
        BasePredictor.stream_inference,
        (
            "self.results[i].speed = {",
            '"preprocess": profilers[0].dt * 1e3 / n,',
            '"inference": profilers[1].dt',
            '"postprocess": profilers[2].dt',
        ),
        "distill.registry.latency:time_per_image",
        "each result of a predict call carries its image's preprocess, inference and postprocess time in ms (the "
        "batch's time over its images): the latency the evaluate step records and the benchmark charts is their sum.",
        ordered=True,
    ),
    Assumption(
        "fonts-in-config-dir",
        check_font,
        ("file = USER_CONFIG_DIR / name", "if file.exists():"),
        "distill.offline:_place_fonts",
        "a font found in USER_CONFIG_DIR is used without a download (the dataset check asks for Arial.ttf or "
        "Arial.Unicode.ttf).",
    ),
)
