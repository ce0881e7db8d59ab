"""Loguru set-up for training and evaluation: rank 0 talks, other ranks only warn."""
import sys
from pathlib import Path

from loguru import logger

FORMAT = "<green>{time:YYYY-MM-DD HH:mm:ss}</green> | <level>{level: <8}</level> | {message}"


def setup_logger(save_dir=None, rank=0, filename="train_log.txt", mode="a"):
    """Replace loguru's sinks: stderr (INFO on rank 0, WARNING elsewhere) + a log file on rank 0."""
    logger.remove()
    # a function sink finds the current sys.stderr at each write (pytest swaps it)
    logger.add(lambda message: sys.stderr.write(message), format=FORMAT,
               level="INFO" if rank == 0 else "WARNING")
    if rank == 0 and save_dir is not None:
        path = Path(save_dir) / filename
        path.parent.mkdir(parents=True, exist_ok=True)
        if mode == "o" and path.exists():
            path.unlink()
        logger.add(str(path), format=FORMAT, level="INFO", enqueue=False)
    return logger
