"""Train a YOLOX model: python -m yolox.tools.train -n yolox-s -b 8 --data_dir DIR [flags] [key value ...]
(also ``python tools/train.py ...`` in a checkout and the ``detkit-train`` console script).

Trailing ``key value`` pairs override exp attributes (e.g. ``max_epoch 2 steps 500 output_dir ./out``).
``--devices N`` on one node relaunches itself under torchrun with N processes (unless already
started by torchrun or mpirun).
"""
import os
import sys

from accel import destroy, dist_env, launch_local, resolve_device
from accel.distributed import set_rendezvous
from accel.errors import UserError, cli_entry
from accel.policy import reserve_device_memory
from detcore.training.report import split_wandb_options
from yolox.core.cli import build_exp
from yolox.core.options import train_parser

make_parser = train_parser


def check_args(args):
    if args.batch_size < 1:
        raise UserError(f"--batch-size must be >= 1 (got {args.batch_size})")
    if args.devices is not None and args.devices < 1:
        raise UserError(f"--devices must be >= 1 (got {args.devices})")
    if args.start_epoch is not None and (args.start_epoch < 1 or not args.resume):
        raise UserError("-e/--start_epoch needs --resume and a value >= 1")
    if args.logger == "tensorboard":
        try:
            import tensorboard  # noqa: F401
        except ImportError:
            raise UserError("--logger tensorboard needs the tensorboard package "
                            "(pip install tensorboard), or use --logger loguru") from None
    args.opts, args.wandb_options = split_wandb_options(list(args.opts or []))
    if args.wandb_options and args.logger != "wandb":
        raise UserError("wandb-* options need -l wandb")
    if args.dist_timeout <= 0:
        raise UserError(f"--dist-timeout must be > 0 seconds (got {args.dist_timeout})")
    if args.num_machines < 1 or not 0 <= args.machine_rank < args.num_machines:
        raise UserError(f"--machine_rank {args.machine_rank} must be in [0, --num_machines "
                        f"{args.num_machines})")
    if args.num_machines > 1 and args.dist_url in (None, "auto"):
        raise UserError("--num_machines > 1 needs --dist-url tcp://HOST:PORT of machine 0 "
                        "(dist_url=auto cannot work across machines, as upstream)")
    if args.use_lazy_mode is not None:
        # Habana's 1.6 recipe spelling: the bridge reads PT_HPU_LAZY_MODE at import
        os.environ["PT_HPU_LAZY_MODE"] = "1" if args.use_lazy_mode else "0"


@cli_entry
def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = make_parser().parse_args(argv)
    check_args(args)
    exp = build_exp(args)       # validates names, overrides and data dir before any relaunch
    if args.dist_url not in (None, "auto"):
        set_rendezvous(args.dist_url)
    devices = args.devices or 1
    if devices > 1 or args.num_machines > 1:
        world = dist_env().world_size
        if world == 1:
            launch_local(devices, main, argv, nnodes=args.num_machines,
                         node_rank=args.machine_rank)
        elif world != devices * args.num_machines:
            raise UserError(f"--devices {devices} x --num_machines {args.num_machines} but the "
                            f"launcher started {world} processes")
    if args.occupy:
        reserve_device_memory(resolve_device(args))
    if args.batch_size % dist_env().world_size:
        raise UserError(f"--batch-size {args.batch_size} is not divisible by "
                        f"{dist_env().world_size} processes")
    exp.get_trainer(args).train()   # upstream exp files override get_trainer(self, args)
    destroy()      # on success only, as ssd/train.py: a broken group's teardown can abort


if __name__ == "__main__":
    main()
