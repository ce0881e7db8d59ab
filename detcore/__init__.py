"""What both detectors share above the device layer: COCO reading and scoring, the training
toolbox (seeding and RNG state, learning rate, checkpoints on the main process, strict weight
loading, run lock) and logging. Device questions stay in ``accel``."""
