"""The YOLOX training loop: epochs of SGD steps with EMA, multi-scale, periodic COCO eval and
atomic checkpoints that let ``--resume`` continue at the exact epoch and iteration."""
import time
from pathlib import Path

import torch
from loguru import logger

from accel import (Precision, all_reduce_norm, broadcast_object, init_distributed, resolve_device,
                   set_threads_per_process, unwrap, wrap_ddp)
from accel.distributed import log_rank_agreement
from accel.errors import report_position
from accel.preemption import PreemptionGuard
from accel import watchdog
from accel.policy import compile_model, ema_class, memory_format, require_lazy_or_compiled
from detcore.data.check import report_at_start
from detcore.training.checkpoints import Checkpoints, restore_rng
from detcore.training.log import setup_logger
from detcore.training.progress import StepClock
from detcore.training.toolbox import RunLock, draw_seed, seed_everything, set_lr
from detcore.training.early_stop import MetricWatch
from detcore.training.epochs import EpochBook, Evaluation, require_finite
from detcore.training.mlflow_run import RUN_ID_KEY, check_args as check_mlflow_args
from detcore.training.report import RunReport, run_params
from yolox.core.checkpoint import CheckpointHooks
from yolox.core.ema import ModelEMA, make_ema
from yolox.core.options import train_options

LOSS_KEYS = ("total_loss", "iou_loss", "conf_loss", "cls_loss", "l1_loss", "num_fg")


class Trainer(CheckpointHooks):
    """Trains ``exp``'s model with tools/train.py's options as plain keywords
    (``Trainer(exp, batch_size=8, device="cpu", ckpt="w.pth")``; defaults are the CLI's, see
    ``yolox.core.options.train_options``) or, as upstream's ``exp.get_trainer(args)``, a parsed namespace.
    Everything else comes from the exp.
    """

    def __init__(self, exp, args=None, **options):
        args = train_options(args, **options)
        if not args.experiment_name:
            args.experiment_name = exp.exp_name
        if args.freeze:
            exp.freeze_backbone = True
        if args.seed is not None:
            exp.seed = args.seed
        self.exp, self.args = exp, args
        self.device = resolve_device(args, dynamic_shapes=False)   # Habana's YOLOX 1.23
        info = init_distributed(self.device, timeout_s=getattr(args, "dist_timeout", 1800),
                                backend=getattr(args, "dist_backend", None))
        self.rank, self.world_size = info.rank, info.world_size
        set_threads_per_process(self.device, info.world_size)
        self.is_distributed = info.world_size > 1
        self.precision = Precision.from_args(args, self.device)
        self.batch_size = args.batch_size
        self.max_epoch = exp.max_epoch
        self.file_name = Path(exp.output_dir) / (args.experiment_name or exp.exp_name)
        self.input_size = tuple(exp.input_size)
        self.memory_format = memory_format(self.device, exp.channels_last)
        exp.device = self.device   # the exp's loaders pin memory for it (accel.policy)
        self.best_ap = 0.0
        # best_ckpt.pth and the early stop follow exp.best_metric (checked here: one line)
        self.watch = MetricWatch(getattr(exp, "best_metric", "ap50_95"), getattr(exp, "patience", 0))
        self.stopped_early = False
        self.start_epoch, self.start_iter = 0, 0     # resume position (iteration within epoch)
        self.epoch, self.iter = 0, 0
        self.run_iters = 0                           # iterations done by this process
        self.no_aug = False
        self.report = self.book = None       # RunReport and EpochBook, made by before_train
        self.clock = StepClock()             # step times of the loss lines
        self._last_outputs = None
        self.guard = None          # PreemptionGuard, while train() runs

    # ----------------------------------------------------------------------- main loop
    @property
    def progress_in_iter(self):
        """Global iteration index (0-based) of the current step."""
        return self.epoch * self.max_iter + self.iter

    def train(self):
        self.guard = PreemptionGuard()
        self.finished = False      # after_train says "training done" only when this is True
        try:
            self.before_train()
            self.train_in_epoch()
            if self.book is not None:
                self.book.final_plots()
            log_rank_agreement(unwrap(self.model))
            if self.ema is not None:
                log_rank_agreement(self.ema.ema, "EMA weights")
            self.finished = True
        finally:
            self.after_train()

    def train_in_epoch(self):
        for self.epoch in range(self.start_epoch, self.max_epoch):
            if self.watch.stopped:
                # ``patience`` evaluations without improvement (now, or before a resume): the
                # run ends as after its last epoch (that evaluation, latest_ckpt.pth and the
                # report row are done), through train()'s normal end
                self.stopped_early = True
                logger.info(self.watch.stop_line())
                break
            self.before_epoch()
            first = self.start_iter if self.epoch == self.start_epoch else 0
            for self.iter in range(first, self.max_iter):
                self.train_one_iter()
                self.after_iter()
            self.after_epoch()

    def next_batch(self):
        """The loader's next (images, targets) on the device, images as float32 (the loader's
        are uint8, ``TrainTransform``) in one reused buffer (``yolox.data.as_float``), before the
        multi-scale resize of ``train_one_iter``."""
        from yolox.data.dataloading import as_float

        inps, targets = next(self.train_iter)[:2]
        inps, self._input_buf = as_float(inps.to(self.device, non_blocking=True),
                                         getattr(self, "_input_buf", None))
        return inps, targets.to(self.device, non_blocking=True)

    def train_one_iter(self):
        t0 = time.time()
        watchdog.beat("data loading")       # attribute writes only: what a hang report names
        inps, targets = self.next_batch()
        watchdog.beat("training step")
        t1 = time.time()
        inps, targets = self.exp.preprocess(inps, targets, self.input_size)
        inps = inps.contiguous(memory_format=self.memory_format)
        outputs = self.train_step(inps, targets)
        self.set_lr(self.lr_scheduler.update_lr(self.progress_in_iter + 1))
        self._last_outputs = outputs
        self.book.step(outputs, self.batch_size)
        self.clock.add(time.time() - t0, t1 - t0)
        self.run_iters += 1
        watchdog.beat(step=self.progress_in_iter + 1)
        if self.compiled and self.run_iters == 1:
            # the first compiled step is mostly compilation: report it apart from step times
            logger.info(f"torch.compile: first step (compile included) took {time.time() - t0:.1f} s")
            self.clock.reset()

    def train_step(self, inps, targets):
        """One optimiser step on a batch; returns the detached loss dict (no host sync)."""
        with self.precision.autocast():
            outputs = self.forward_model(inps, targets)
        self.optimizer.zero_grad(set_to_none=True)
        self.precision.backward_and_step(outputs["total_loss"], self.optimizer)
        if self.ema is not None:
            self.ema.update(self.model)
        return {k: v.detach() if torch.is_tensor(v) else v for k, v in outputs.items()}

    def set_lr(self, lr):
        set_lr(self.optimizer, lr)

    # ----------------------------------------------------------------------- hooks
    def before_train(self):
        exp, args = self.exp, self.args
        check_mlflow_args(args)
        self.lock = RunLock(self.file_name, enabled=self.rank == 0)
        setup_logger(self.file_name, rank=self.rank)
        watchdog.log_to(self.file_name)      # a hang report's stack dumps go beside train_log.txt
        report_position(lambda: f"epoch {self.epoch + 1}, iteration {self.progress_in_iter + 1}; "
                                f"newest checkpoint {self.checkpoints.newest()}")
        logger.info(f"args: {vars(args)}")
        self._seed_given = exp.seed is not None
        exp.seed = draw_seed(exp.seed)   # a drawn seed is recorded in the checkpoints
        self.checkpoints = Checkpoints(self.file_name, "latest_ckpt.pth", exp.ckpt_interval, exp.ckpt_keep)
        exp.sync_classes()   # num_classes / class_names from the data, before the model is built
        logger.info(f"exp value:\n{exp}")   # after sync_classes: the table shows the values used
        seed_everything(exp.seed)
        model = exp.get_model().to(self.device, memory_format=self.memory_format)
        model.train()
        exp.model = model          # upstream's get_optimizer reads exp.model
        self.optimizer = exp.get_optimizer(self.batch_size)
        ckpt = self.load_weights(model)
        self.prepare_data(ckpt)
        self.ema = make_ema(ema_class(self.device, ModelEMA), model, self.exp.ema,
                            self.max_iter * self.start_epoch + self.start_iter, ckpt)
        if self.no_aug:
            model.head.use_l1 = True
        self.distribute(model, ckpt)
        self.evaluator = exp.get_evaluator(batch_size=self.batch_size,
                                           is_distributed=self.is_distributed)
        if hasattr(self.evaluator, "keep_rows"):
            self.evaluator.keep_rows = True     # best_detections.npy (EpochBook)
        self.report = RunReport(self.file_name, enabled=self.rank == 0, kind=args.logger,
                                wandb_options=getattr(args, "wandb_options", None), start_epoch=self.start_epoch,
                                config=run_params(exp.settings(), device=str(self.device), world_size=self.world_size,
                                                  batch_size=self.batch_size, precision=self.precision.mode),
                                mlflow={"uri": args.mlflow_uri, "run_id": (ckpt or {}).get(RUN_ID_KEY)})
        self.book = EpochBook(self.report, self.watch, self.file_name, LOSS_KEYS[:-1], "total_loss",
                              main=self.rank == 0)
        if self.rank == 0:
            self.data_report()
        logger.info(f"training {self.max_epoch} epochs x {self.max_iter} iterations, "
                    f"batch {self.batch_size} over {self.world_size} process(es) on {self.device}, "
                    f"precision {self.precision.mode}; output {self.file_name}")

    def data_report(self):
        """The training split's one-line summary and labels.png (``detcore.data.check``)."""
        source = getattr(getattr(self.train_loader.dataset, "_dataset", None), "source", None)
        if source is not None:
            report_at_start(source, self.file_name, allow_empty=self.exp.allow_empty_train,
                            allow_with="the exp option allow_empty_train True")

    def prepare_data(self, ckpt):
        """The training loader, positioned where the checkpoint (if any) left the sample stream,
        and the per-epoch iteration count and LR schedule that follow from it."""
        exp = self.exp
        self.no_aug = self.start_epoch >= self.max_epoch - exp.no_aug_epochs
        self.train_loader = exp.get_data_loader(self.batch_size, self.is_distributed,
                                                no_aug=self.no_aug, cache_img=self.args.cache)
        self.max_iter = self.train_loader.iters_per_epoch
        if exp.steps:
            # Habana's recipe: ``steps N`` caps each epoch at N iterations (the schedule follows)
            self.max_iter = min(self.max_iter, exp.steps)
        done = self.start_epoch * self.max_iter + min(self.start_iter, self.max_iter)
        # continue the sample stream exactly where the checkpoint left it
        self.train_loader.batch_sampler.sampler.start = done * self.train_loader.batch_sampler.batch_size
        self.train_iter = iter(self.train_loader)
        if ckpt is not None:
            self.input_size = tuple(ckpt.get("input_size", self.input_size))
        self.lr_scheduler = exp.get_lr_scheduler(exp.basic_lr_per_img * self.batch_size,
                                                 self.max_iter)
        self.start_iter = min(self.start_iter, self.max_iter)
        if ckpt is not None:
            logger.info(f"resumed from {self.resume_path} at epoch {self.start_epoch + 1}, "
                        f"iteration {self.start_epoch * self.max_iter + self.start_iter}")

    def distribute(self, model, ckpt):
        """DDP (and torch.compile) around the model, then each rank's own RNG and BN state."""
        # DDP as Habana's YOLOX: buffers not re-broadcast (wrap_ddp's default), gradients as
        # views into the buckets (no copy)
        self.model = wrap_ddp(model, self.device, hpu_first_bucket_mb=200, gradient_as_bucket_view=True)
        if ckpt is not None:
            # after iter() (the loader draws its base seed) and after DDP (which broadcasts rank
            # 0's buffers): each rank's own RNG and BN statistics, else rank 0's RNG
            restore_rng(ckpt, *self.stateful_modules())
        # training may run through torch.compile; self.model stays the module checkpoints,
        # EMA and eval use (its state-dict keys have no _orig_mod. prefix)
        self.compiled = bool(getattr(self.args, "use_torch_compile", False) or self.exp.torch_compile)
        require_lazy_or_compiled(self.device, self.compiled, "YOLOX training")
        self.forward_model = compile_model(self.model, self.device) if self.compiled else self.model

    def before_epoch(self):
        logger.info(f"---> start train epoch {self.epoch + 1}")
        self.book.start()
        if self.epoch >= self.max_epoch - self.exp.no_aug_epochs:
            if not self.no_aug:
                logger.info("---> no mosaic aug now; L1 loss on")
                self.no_aug = True
                self.train_loader.close_mosaic()   # reaches persistent workers via the sampler
            unwrap(self.model).head.use_l1 = True
            self.exp.eval_interval = 1

    def after_iter(self):
        if (self.iter + 1) % self.exp.print_interval == 0:
            self.log_progress()
        if self.exp.multiscale_range > 0 and (self.progress_in_iter + 1) % 10 == 0:
            self.input_size = self.exp.random_resize(self.train_loader, self.epoch, self.rank,
                                                     self.is_distributed)
        self.checkpoint_policy()

    def log_progress(self):
        """The only place losses leave the device (every ``print_interval`` iterations)."""
        iter_time, data_time = self.clock.mean()
        losses = self.check_finite()
        eta = self.clock.eta(self.max_epoch * self.max_iter - (self.progress_in_iter + 1))
        lr = self.optimizer.param_groups[0]["lr"]
        loss_str = ", ".join(f"{k}: {v:.3f}" for k, v in losses.items())
        logger.info(f"epoch: {self.epoch + 1}/{self.max_epoch}, iter: {self.iter + 1}/{self.max_iter}, "
                    f"iter_time: {iter_time:.3f}s, data_time: {data_time:.3f}s, {loss_str}, "
                    f"lr: {lr:.3e}, img/s: {self.batch_size / max(iter_time, 1e-9):.1f}, "
                    f"size: {self.input_size[0]}, ETA: {eta}")
        self.report.scalars(self.progress_in_iter + 1,
                            {**{f"train/{k}": v for k, v in losses.items()}, "train/lr": lr})
        self.clock.reset()

    def check_finite(self):
        """The last step's losses as floats; a non-finite one stops the run (before anything
        is saved) with one line naming the iteration and the last good checkpoint."""
        return require_finite({k: self._last_outputs[k] for k in LOSS_KEYS if k in self._last_outputs},
                              f"epoch {self.epoch + 1}, iteration {self.progress_in_iter + 1}",
                              self.file_name / "latest_ckpt.pth",
                              "lower the learning rate, e.g. basic_lr_per_img, and --resume")

    def after_epoch(self):
        """Evaluate (every ``eval_interval`` epochs and after the last), write latest_ckpt.pth,
        then the epoch's results.csv row (``EpochBook.end``)."""
        self.check_finite()
        ap = None
        if (self.epoch + 1) % self.exp.eval_interval == 0 or self.epoch + 1 == self.max_epoch:
            ap = self.evaluate_and_save_model()
        self.save_ckpt("latest", next_epoch=self.epoch + 1, next_iter=0, ap=ap)
        self.checkpoints.superseded((self.epoch + 1) * self.max_iter)
        self.book.end(self.epoch + 1, self.optimizer.param_groups[0]["lr"])

    def after_train(self):
        if self.guard is not None:
            self.guard.close()
        if getattr(self, "lock", None) is not None:
            self.lock.release()
        preempted = self.guard is not None and (self.guard.signum or getattr(self.guard, "agreed", None))
        # a trainer driven hook by hook (no train()) has no ``finished`` flag and keeps the line
        line = end_line(preempted, getattr(self, "finished", True), self.stopped_early, self.best_ap, self.watch)
        if line:
            logger.info(line)
        if self.report is not None:
            self.report.close("KILLED" if preempted else "FINISHED" if getattr(self, "finished", True) else "FAILED",
                              self.file_name / "best_ckpt.pth",
                              (self.args.register, self.export_best, self.args.mlflow_uri))

    # ----------------------------------------------------------------------- eval + checkpoints
    def evaluate_and_save_model(self):
        """COCO AP and the validation loss (one forward, ``COCOEvaluator``), logged and handed
        to the ``EpochBook`` (watch, report, per-class csv); best_ckpt.pth when the watched metric
        improved. Returns AP50:95."""
        # each rank's BN statistics saw only its shard: average them (upstream all_reduce_norm)
        # in the trained and the evaluated model, so every rank scores the same model
        watchdog.beat("evaluation")
        all_reduce_norm(unwrap(self.model))
        if self.ema is not None:         # without EMA the evaluated model is the one just averaged
            all_reduce_norm(self.eval_model())
        head = getattr(self.eval_model(), "head", None)
        if head is not None:             # the EMA copy's head: the val loss has the training terms
            head.use_l1 = unwrap(self.model).head.use_l1
        with watchdog.ticking(self.eval_model(), "evaluation"):    # every batch's forward is progress
            ap50_95, ap50, summary = self.exp.eval(self.eval_model(), self.evaluator, self.is_distributed)
        val_loss = (self.evaluator.val_loss(self.is_distributed)
                    if hasattr(self.evaluator, "val_loss") else None)
        logger.info(f"epoch {self.epoch + 1}: AP50:95 {ap50_95:.4f}, AP50 {ap50:.4f}\n{summary}")
        improved = self.book.evaluated(self.epoch + 1, Evaluation(ap50_95, ap50, val_loss,
                                                                  getattr(self.evaluator, "last_result", None)))
        # decided on rank 0 (whose folder holds best_ckpt.pth): saving is a collective
        improved = broadcast_object(improved or not (self.file_name / "best_ckpt.pth").exists())
        self.best_ap = max(self.best_ap, ap50_95)
        if improved:
            self.save_ckpt("best", next_epoch=self.epoch + 1, next_iter=0, ap=ap50_95)
        if self.exp.save_history_ckpt:
            self.save_ckpt(f"epoch_{self.epoch + 1}", next_epoch=self.epoch + 1, next_iter=0, ap=ap50_95)
        return ap50_95


def end_line(preempted, finished, stopped_early, best_ap, watch):
    """The run's last log line: "training done, best AP50:95 0.4123, best ap50 0.6012" (or
    "stopped" after a preemption, "done early (patience)" after an early stop). None for a run
    ended by Ctrl-C, a failed collective or an error: its one line (``accel.errors.cli_entry``)
    says what happened, and "training done" would say otherwise."""
    if not (preempted or finished):
        return None
    best = "none" if watch.best is None else f"{watch.best:.4f}"
    return (f"training {'stopped' if preempted else 'done'}{' early (patience)' if stopped_early else ''}, "
            f"best AP50:95 {best_ap:.4f}, best {watch.metric} {best}")
