"""The SSD run behind ``ssd/train.py``: what one invocation builds (data, model, optimiser,
loaders), the run loop (epochs, evaluation at ``--val-interval``, the ``--threshold`` /
``--patience`` stop, checkpoints) and the MLPerf log. The step is ``ssd.step``, the evaluation
``ssd.evaluation``, the checkpoint files ``ssd.checkpoint``, the loaders ``ssd.loaders``; what both
trainers share (checkpoint policy and resume, reports, early stopping) is ``detcore.training``."""
import math
import time
from pathlib import Path

from loguru import logger
from mlperf_logging.mllog import constants as C

import accel
from accel import watchdog
from accel.errors import Preempted, report_position
from accel.policy import compile_model
from accel.preemption import PreemptionGuard
from detcore.data.check import report_at_start, require_boxes
from detcore.training.checkpoints import restore_rng
from detcore.training.log import setup_logger
from detcore.training.progress import StepClock
from detcore.training.early_stop import MetricWatch
from detcore.training.epochs import EpochBook, Evaluation, require_finite
from detcore.training.mlflow_run import RUN_ID_KEY
from detcore.training.report import RunReport, run_params
from detcore.training.toolbox import RunLock, draw_seed, seed_everything
from ssd import SSD300, Encoder, Loss, dboxes300_coco
from ssd.checkpoint import (BEST_NAME, CHECKPOINT_NAME, EVAL_HINT, CheckpointHooks, check_label_names,
                            checkpoint_classes, load_strict, start_from)
from ssd.data import CocoDetection, open_sources
from ssd.evaluation import VAL_LOSS_KEYS, evaluate, report_evaluation, val_loss_text
from ssd.loaders import make_loaders
from ssd.mlperf_log import MLPerfLogger
from ssd.model import load_backbone_choice
from ssd.step import REFERENCE_BATCH, TrainStep, build_optimizer, learning_rate, place_model

MLPERF_LOG_NAME = "mlperf_ssd.log"


class SSDRun(CheckpointHooks):
    """Everything one ``ssd/train.py`` invocation builds, then ``fit()`` (or, with
    ``--eval-only``, ``evaluate_only()``: the val split, the model and nothing else)."""

    def __init__(self, args):
        self.args = args
        self.eval_only = bool(getattr(args, "eval_only", False))
        self.device = accel.resolve_device(args, dynamic_shapes=True)   # Habana's SSD 1.17
        self.info = accel.init_distributed(self.device, timeout_s=args.dist_timeout)
        accel.set_threads_per_process(self.device, self.info.world_size)
        self.rank0 = accel.is_main_process()
        self.out_dir = Path(args.output_dir)
        # --eval-only writes no checkpoint, so it may score the file of a run still training there
        self.lock = RunLock(self.out_dir, enabled=self.rank0 and not self.eval_only)
        setup_logger(self.out_dir, rank=self.info.rank,
                     filename="val_log.txt" if self.eval_only else "train_log.txt")
        watchdog.log_to(self.out_dir)        # a hang report's stack dumps go beside the log
        training_log = self.rank0 and not self.eval_only
        self.mlog = MLPerfLogger(self.out_dir / MLPERF_LOG_NAME if training_log else None, enabled=training_log)
        self.mlog.event(C.CACHE_CLEAR, True)
        self.mlog.start(C.INIT_START)
        self.mlog.submission_info(platform=f"{self.info.world_size}x{self.device.type}")
        self._build()

    def _build(self):
        args, info, device = self.args, self.info, self.device
        saved = self._resume_source()
        # resuming without -s continues with the run's own (possibly drawn) seed
        self.seed = draw_seed(args.seed if args.seed is not None or saved is None else saved.get("seed"))
        self._make_datasets(saved)
        self.encoder = Encoder(dboxes300_coco())     # also the loader workers' with --encode-in workers
        self._make_loaders()
        self.precision = accel.Precision.from_args(args, device)
        # Seeded right before the model is built, so the model's initialisation is the first thing
        # drawn from the seed: the tensors a fine-tune does not load (another label count's
        # class-confidence convs) are exactly those of SSD300(label_num=K) built after
        # torch.manual_seed(seed), whatever the data code above draws or may draw one day.
        seed_everything(self.seed, args.deterministic)
        self.net = SSD300(label_num=self.val_set.num_classes)     # the train split's labels too
        self.watch = MetricWatch(args.best_metric, args.patience, names=("--best-metric", "--patience"))
        if self.eval_only:
            load_strict(self.net, saved, args.checkpoint, EVAL_HINT)
            check_label_names(saved, self.val_set, args.checkpoint)
            place_model(self.net, device)
            self.loss_fn = Loss(dboxes300_coco()).to(device)     # the val loss beside the mAP
            return
        # the backbone choice first: a --checkpoint's backbone tensors then override it
        load_backbone_choice(self.net, args.pretrained_backbone)
        self.net.freeze_backbone(args.trainable_backbone_layers)
        place_model(self.net, device)
        self.loss_fn = Loss(dboxes300_coco()).to(device)
        self.global_batch = args.batch_size * info.world_size
        self.base_lr = args.lr * self.global_batch / REFERENCE_BATCH
        self.optimizer = build_optimizer(args.opt, self.net.parameters(), self.base_lr, args.weight_decay, device)
        self.iteration, self.resumed = start_from(args, saved, self.net, self.optimizer, self.precision, self.watch)
        # DDP as Habana's SSD: 100 MB buckets, gradients as bucket views, buffers not broadcast
        model = accel.wrap_ddp(self.net, device, hpu_first_bucket_mb=100, bucket_cap_mb=100,
                               gradient_as_bucket_view=True)
        if args.use_torch_compile:
            model = compile_model(model, device)
        self.model = model   # self.net stays the bare module: checkpoints and eval use it
        self.step = TrainStep(model, self.loss_fn, self.encoder, self.optimizer, self.precision, device,
                              args.batch_splits, args.clip_grad_norm)

    def _make_datasets(self, saved):
        """The train split (not for --eval-only) and the val split of --data, labelled alike."""
        args = self.args
        train, val = open_sources(args.data, train=not self.eval_only,
                                  class_names=checkpoint_classes(saved) if self.eval_only else None)
        self.train_set = None
        if train is not None:
            # before the reference's COCO filter (images with boxes only) leaves no sample: one
            # line; with --allow-empty-train the background images are the samples
            require_boxes(train, allow_empty=getattr(args, "allow_empty_train", False),
                          allow_with="--allow-empty-train")
            self.train_set = CocoDetection(source=train, train=True, seed=self.seed,
                                           crop_tries=args.num_cropping_iterations,
                                           keep_background=True if len(train.table.cls) == 0 else None)
        self.val_set = CocoDetection(source=val, train=False)

    def _make_loaders(self):
        """The loaders (``ssd.loaders``); the training sampler is what a resume positions."""
        built = make_loaders(self.args, self.info, self.device, self.train_set, self.val_set,
                             getattr(self, "encoder", None), self.seed)
        self.val_loader = built.val_loader
        if built.train_loader is not None:
            self.train_loader, self.sampler, self.targets_encoded = (built.train_loader, built.sampler,
                                                                     built.targets_encoded)

    def evaluate_only(self):
        """``--eval-only``: score the ``--checkpoint`` weights on the val split once; the COCO
        summary goes to the log, ``AP50_95``/``AP50`` lines to stdout (as ``tools/eval.py``).
        Nothing is trained and no checkpoint is written. Returns the ``CocoScore``."""
        args = self.args
        logger.info(f"--eval-only: {args.checkpoint} on {len(self.val_set)} val images, "
                    f"{self.val_set.num_classes - 1} classes, device {self.device}")
        watchdog.beat("evaluation")
        result = evaluate(self.net, self.val_loader, self.encoder, self.val_set, self.device,
                          args.nms_valid_thresh, self.precision, self.loss_fn, keep_rows=bool(args.analyze))
        if self.rank0:
            report_evaluation(result, args.checkpoint, self.val_set, self.out_dir, args.analyze)
        return result

    def fit(self):
        """Train epoch by epoch until --epochs, --end-iteration, the --threshold mAP or, with
        --patience N, N evaluations without improving --best-metric; returns the MLPerf status.
        A preemption signal ends it with ``Preempted`` after a checkpoint."""
        self.announce()
        # each rank's own RNG and BN statistics (after DDP, which broadcasts rank 0's buffers)
        if self.resumed is not None:
            restore_rng(self.resumed, self.net)
        ipe = self.sampler.batches_per_epoch
        self.report = RunReport(self.out_dir, enabled=self.rank0, kind=self.args.logger,
                                config=run_params(vars(self.args), device=str(self.device),
                                                  world_size=self.info.world_size,
                                                  class_names=",".join(self.train_set.source.class_names)),
                                start_epoch=self.iteration // ipe,
                                mlflow={"uri": self.args.mlflow_uri, "run_id": (self.resumed or {}).get(RUN_ID_KEY)})
        self.book = EpochBook(self.report, self.watch, self.out_dir, ("loss",), "loss", VAL_LOSS_KEYS,
                              main=self.rank0)
        report_position(lambda: f"epoch {self.iteration // ipe + 1}, iteration {self.iteration}; "
                                f"newest checkpoint {self.checkpoints.newest()}")
        self.guard = PreemptionGuard()
        status, self.start_time, self.start_iter = C.ABORTED, time.time(), self.iteration
        self.clock, self.step_t0 = StepClock(), time.time()     # step times of the loss lines
        self.stopped_early = False
        try:
            for epoch in range(self.iteration // ipe, self.args.epochs):
                if self.iteration >= self.end:
                    break
                if self.watch.stopped:
                    # --patience evaluations without improvement (now, or before a resume): the
                    # evaluation, checkpoints and report row of that epoch are done; end as usual
                    self.stopped_early = True
                    logger.info(self.watch.stop_line())
                    break
                result = self.train_epoch(epoch)
                if result is not None and result.ap50_95 >= self.args.threshold:
                    status = C.SUCCESS
                    break
        except Preempted:
            self.report.close("KILLED")
            self.lock.release()
            raise
        finally:
            self.guard.close()
        return self.finish(status)

    def announce(self):
        """The schedule (MLPerf hyperparameters, log line) and why a log would not be compliant."""
        args, mlog = self.args, self.mlog
        ipe = self.sampler.batches_per_epoch
        self.warmup_iters = int(args.warmup * ipe) if args.warmup else 0
        self.boundaries = [e * ipe for e in args.lr_decay_schedule]
        self.end = args.end_iteration or math.inf
        mlog.schedule(args, seed=self.seed, global_batch_size=self.global_batch, train_samples=len(self.train_set),
                      eval_samples=len(self.val_set), base_lr=self.base_lr, warmup_steps=self.warmup_iters)
        mlog.end(C.INIT_STOP)
        mlog.start(C.RUN_START)
        logger.info(f"{len(self.train_set)} train / {len(self.val_set)} val images, "
                    f"{self.train_set.num_classes - 1} classes, {self.info.world_size} process(es) x batch "
                    f"{args.batch_size}, {ipe} iterations/epoch, lr {self.base_lr:.4g}, device {self.device}, "
                    f"seed {self.seed}")
        if self.rank0:
            report_at_start(self.train_set.source, self.out_dir, allow_empty=getattr(args, "allow_empty_train", False),
                            allow_with="--allow-empty-train")

    def train_epoch(self, epoch):
        """One epoch (or its rest, after a mid-epoch resume); returns the evaluation, if any."""
        ipe = self.sampler.batches_per_epoch
        epoch_start_iter, loss = self.iteration, None
        self.book.start()
        self.mlog.start(C.EPOCH_START, metadata={C.EPOCH_NUM: epoch + 1})
        self.sampler.set_epoch(epoch, self.iteration - epoch * ipe)
        self.train_set.epoch = epoch
        self.model.train()
        watchdog.beat("data loading")      # attribute writes only: what a hang report names
        for imgs, boxes, labels, _, _ in self.train_loader:
            watchdog.beat("training step")
            lr = learning_rate(self.iteration, self.base_lr, self.warmup_iters, self.args.warmup_factor,
                               self.boundaries)
            loss = self.step(imgs, boxes, labels, lr, encoded=self.targets_encoded)
            self.book.step({"loss": loss}, self.global_batch)
            self.iteration += 1
            watchdog.beat(step=self.iteration)
            self.after_step(epoch, loss, lr)
            if self.iteration >= self.end:
                break
            watchdog.beat("data loading")
        self.mlog.end(C.EPOCH_STOP, metadata={C.EPOCH_NUM: epoch + 1})
        if self.iteration > epoch_start_iter:
            require_finite({"loss": loss}, f"iteration {self.iteration}", self.checkpoints.newest())
        epoch_done = self.iteration == (epoch + 1) * ipe
        result = None
        # as the reference: an epoch cut short by --end-iteration is still evaluated
        if ((epoch_done or self.iteration >= self.end)
                and ((epoch + 1) % self.args.val_interval == 0 or epoch + 1 in self.args.val_epochs)):
            result = self.evaluate_epoch(epoch)
        # after the evaluation: the checkpoint holds the best-metric watch it updated
        self.save(epoch + 1 if epoch_done else epoch, self.iteration,
                  best=result is not None and self.improved)
        self.book.end(epoch + 1, self.optimizer.param_groups[0]["lr"])
        return result

    def after_step(self, epoch, loss, lr):
        """Per step: the compile note, the loss line every --log-interval, the checkpoint policy."""
        now = time.time()
        self.clock.add(now - self.step_t0)      # the whole step: data, forward, backward, optimiser
        self.step_t0 = now
        if self.args.use_torch_compile and self.iteration == self.start_iter + 1:
            # the first compiled step is mostly compilation: report it apart
            logger.info(f"torch.compile: first step (compile included) took {self.clock.step_s:.1f} s")
            self.clock.reset()
        if self.iteration % self.args.log_interval == 0:
            self.log_step(epoch, loss, lr)
        self.checkpoint_policy(epoch)

    def log_step(self, epoch, loss, lr):
        # the only host sync of the loop
        loss_value = require_finite({"loss": loss}, f"iteration {self.iteration}", self.checkpoints.newest())["loss"]
        secs = self.clock.mean()[0]
        eta = self.clock.eta(min(self.args.epochs * self.sampler.batches_per_epoch, self.end) - self.iteration)
        logger.info(f"iteration {self.iteration} epoch {epoch + 1} loss {loss_value:.4f} "
                    f"lr {lr:.4g} iter_time {secs:.3f}s "
                    f"img/s {self.global_batch / max(secs, 1e-9):.1f} ETA {eta}")
        self.report.scalars(self.iteration, {"train/loss": loss_value, "train/lr": lr})
        self.clock.reset()

    def evaluate_epoch(self, epoch):
        """BN statistics averaged over ranks, the reference's iter_N.pt, COCO mAP (MLPerf
        events) and the validation loss of the same forward, logged and handed to the
        ``EpochBook`` (watch, report, per-class csv; ``self.improved``: the epoch's checkpoint is
        also ssd300_best.pth; the watch decides the --patience stop)."""
        self.mlog.start(C.EVAL_START, metadata={C.EPOCH_NUM: epoch + 1})
        watchdog.beat("evaluation")
        accel.all_reduce_norm(self.net)
        self.save_reference(self.iteration)
        result = evaluate(self.net, self.val_loader, self.encoder, self.val_set, self.device,
                          self.args.nms_valid_thresh, self.precision, self.loss_fn, keep_rows=True)
        self.mlog.event(C.EVAL_ACCURACY, result.ap50_95, metadata={C.EPOCH_NUM: epoch + 1})
        self.mlog.end(C.EVAL_STOP, metadata={C.EPOCH_NUM: epoch + 1})
        val_loss = getattr(result, "val_loss", None) or {}
        logger.info(f"epoch {epoch + 1}: COCO mAP {result.ap50_95:.4f}, AP50 {result.ap50:.4f} "
                    f"(target {self.args.threshold}){val_loss_text(val_loss)}\n{result.summary}")
        self.improved = self.book.evaluated(epoch + 1, Evaluation(result.ap50_95, result.ap50, val_loss, result))
        return result

    def finish(self, status):
        """The end of every run that was not preempted: the MLPerf ``run_stop`` with its status
        (``success`` only when --threshold was reached, as the rules define it; ``aborted``
        otherwise, whatever ended the run) and one human line saying what ended it."""
        self.mlog.end(C.RUN_STOP, metadata={C.STATUS: status})
        accel.synchronize(self.device)
        accel.distributed.log_rank_agreement(self.net)
        done, elapsed = self.iteration - self.start_iter, time.time() - self.start_time
        logger.info(f"finished at iteration {self.iteration}: {self.outcome(status)}; {done} iterations in "
                    f"{elapsed:.1f} s, {done * self.global_batch / max(elapsed, 1e-9):.2f} images/s")
        if not self.args.no_save:
            logger.info(f"checkpoint: {self.out_dir / CHECKPOINT_NAME}")
        self.book.final_plots()
        self.report.close("FINISHED", self.out_dir / BEST_NAME,
                          (self.args.register, self.export_best, self.args.mlflow_uri))
        self.lock.release()
        return status

    def outcome(self, status):
        return outcome(status, self.iteration, self.sampler.batches_per_epoch, self.args.threshold,
                       self.args.end_iteration, self.watch if self.stopped_early else None)


def outcome(status, iteration, batches_per_epoch, threshold, end_iteration=None, watch=None):
    """What ended the run, in words, with the MLPerf status last: "8 epochs done, mAP target
    0.23 not reached (MLPerf status: aborted)"; "aborted" alone reads as a crash. ``watch``: the
    best-metric watch when the run stopped early on --patience."""
    epochs = iteration / batches_per_epoch
    parts = [f"{epochs:.0f} epochs done" if iteration % batches_per_epoch == 0 else f"{epochs:.2f} epochs done"]
    if watch is not None:
        parts.append(f"stopped early: --patience {watch.patience} evaluations without a better "
                     f"{watch.metric} (best {watch.best_text()})")
    elif status != C.SUCCESS and end_iteration and iteration >= end_iteration:
        parts.append(f"--end-iteration {end_iteration} reached")
    reached = "reached" if status == C.SUCCESS else "not reached"
    parts.append(f"mAP target {threshold} {reached} (MLPerf status: {status})")
    return ", ".join(parts)
