"""MLPerf (mllog) event logging for SSD training: rank 0 writes to a file and stdout, others stay silent."""
from pathlib import Path

from loguru import logger
from mlperf_logging import mllog
from mlperf_logging.mllog import constants

REPO_ROOT = Path(__file__).resolve().parents[1]


class MLPerfLogger:
    """Thin wrapper over the shared mllog logger: ``event``/``start``/``end`` no-ops off rank 0."""

    def __init__(self, path=None, enabled=True):
        self.enabled = enabled
        self._log = None
        if enabled:
            if path is not None:
                Path(path).parent.mkdir(parents=True, exist_ok=True)
                mllog.config(filename=str(path), root_dir=str(REPO_ROOT))
            else:
                mllog.config(root_dir=str(REPO_ROOT))
            self._log = mllog.get_mllogger()

    def event(self, key, value=None, metadata=None):
        if self.enabled:
            self._log.event(key=key, value=value, metadata=metadata, stack_offset=2)

    def start(self, key, value=None, metadata=None):
        if self.enabled:
            self._log.start(key=key, value=value, metadata=metadata, stack_offset=2)

    def end(self, key, value=None, metadata=None):
        if self.enabled:
            self._log.end(key=key, value=value, metadata=metadata, stack_offset=2)

    def submission_info(self, platform, org="detkit", division="closed", status="research"):
        """The submission_* keys the common rules require exactly once."""
        self.event(constants.SUBMISSION_BENCHMARK, constants.SSD)
        self.event(constants.SUBMISSION_ORG, org)
        self.event(constants.SUBMISSION_DIVISION, division)
        self.event(constants.SUBMISSION_STATUS, status)
        self.event(constants.SUBMISSION_PLATFORM, platform)

    def hyperparameters(self, *, seed, global_batch_size, local_bn_batch, accumulation_steps,
                        train_samples, eval_samples, base_lr, weight_decay, warmup_steps,
                        warmup_factor, decay_boundary_epochs, decay_factor, num_cropping_iterations=1,
                        opt_name="sgd"):
        """Every hyperparameter key of the 1.0.0 closed SSD rules, each exactly once."""
        c = constants
        for key, value in (
            (c.SEED, seed),
            (c.GLOBAL_BATCH_SIZE, global_batch_size),
            (c.GRADIENT_ACCUMULATION_STEPS, accumulation_steps),
            (c.TRAIN_SAMPLES, train_samples),
            (c.EVAL_SAMPLES, eval_samples),
            (c.MODEL_BN_SPAN, local_bn_batch),
            (c.OPT_NAME, opt_name),
            (c.OPT_BASE_LR, base_lr),
            (c.OPT_WEIGHT_DECAY, weight_decay),
            (c.OPT_LR_WARMUP_STEPS, warmup_steps),
            (c.OPT_LR_WARMUP_FACTOR, warmup_factor),
            (c.OPT_LR_DECAY_BOUNDARY_EPOCHS, list(decay_boundary_epochs)),
            (c.OPT_LR_DECAY_FACTOR, decay_factor),
            (c.MAX_SAMPLES, num_cropping_iterations),
        ):
            self.event(key, value)

    def schedule(self, args, *, seed, global_batch_size, train_samples, eval_samples, base_lr, warmup_steps):
        """The run's hyperparameter events from its flags, and one warning line for each reason
        the log will not pass the compliance checker (an optimiser other than SGD, no warm-up)."""
        self.hyperparameters(
            seed=seed, global_batch_size=global_batch_size, local_bn_batch=args.batch_size // args.batch_splits,
            accumulation_steps=args.batch_splits, train_samples=train_samples, eval_samples=eval_samples,
            base_lr=base_lr, weight_decay=args.weight_decay, warmup_steps=warmup_steps,
            warmup_factor=args.warmup_factor, decay_boundary_epochs=args.lr_decay_schedule, decay_factor=0.1,
            num_cropping_iterations=args.num_cropping_iterations, opt_name=args.opt)
        if args.opt != "sgd":
            logger.warning(f"--opt {args.opt}: the MLPerf log of this run will not be compliant (the "
                           "reference and the closed-division rules train SSD with SGD)")
        if warmup_steps < 1:
            logger.warning("the MLPerf log of this run will not be compliant: the rules require at "
                           "least one warm-up step (pass --warmup, e.g. --warmup 2.619685 as the "
                           "Habana recipe's 8-card command)")
