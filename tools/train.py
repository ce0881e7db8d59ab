"""Train a YOLOX model: python tools/train.py -n yolox-s -b 8 --data_dir DIR [flags] [key value ...]

Trailing ``key value`` pairs override exp attributes (e.g. ``max_epoch 2 steps 500 output_dir ./out``).
``--devices N`` on one node relaunches itself under torchrun with N processes (unless already
started by torchrun or mpirun).
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from accel import add_device_args, add_precision_args, destroy, dist_env, launch_local  # noqa: E402
from accel.errors import UserError, cli_entry  # noqa: E402
from yolox.core.cli import ArgParser, add_exp_args, build_exp  # noqa: E402


def make_parser():
    parser = ArgParser("train.py", description="YOLOX training")
    add_exp_args(parser)
    parser.add_argument("-b", "--batch-size", "--batch_size", dest="batch_size", type=int, default=64,
                        help="total batch size over all devices")
    parser.add_argument("-d", "--devices", type=int, default=None, help="processes on this node")
    parser.add_argument("--resume", action="store_true", help="resume from -c or latest_ckpt.pth")
    parser.add_argument("-c", "--ckpt", default=None, help="checkpoint to resume or fine-tune from")
    parser.add_argument("-e", "--start_epoch", "--start-epoch", dest="start_epoch", type=int,
                        default=None, help="resume at this epoch (1-based)")
    parser.add_argument("--cache", action="store_true", help="cache decoded images in RAM")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("-l", "--logger", choices=("loguru", "tensorboard"), default="loguru")
    add_device_args(parser)
    add_precision_args(parser)
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="exp overrides: key value ...")
    return parser


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


@cli_entry
def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = make_parser().parse_args(argv)
    check_args(args)
    exp = build_exp(args)       # validates names, overrides and data dir before any relaunch
    if args.devices and args.devices > 1:
        world = dist_env().world_size
        if world == 1:
            launch_local(args.devices, Path(__file__).resolve(), argv)
        elif world != args.devices:
            raise UserError(f"--devices {args.devices} but the launcher started {world} processes")
    if args.batch_size % dist_env().world_size:
        raise UserError(f"--batch-size {args.batch_size} is not divisible by "
                        f"{dist_env().world_size} processes")
    try:
        exp.get_trainer(args).train()
    finally:
        destroy()


if __name__ == "__main__":
    main()
