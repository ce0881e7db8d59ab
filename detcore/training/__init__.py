"""Training services that both trainers (``yolox.core.trainer``, ``ssd.engine``) call.

``toolbox`` (seed and RNG state, learning rate, save on the main process, the run lock),
``checkpoints`` (checkpoint policy, resume, the run-config check, per-rank RNG state),
``weights`` (strict and fine-tune weight loading), ``report`` (results.csv / results.png,
TensorBoard, wandb, the early-stopping / best-metric watch), ``log`` and ``progress``."""
