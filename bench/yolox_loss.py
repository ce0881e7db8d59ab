"""Alias kept for the benchmark suite's naming (bench/<model>_<part>.py): runs bench_yolox_loss.py."""
from bench_yolox_loss import main

if __name__ == "__main__":
    main()
