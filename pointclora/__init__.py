"""PointCLoRA: collaborative low-rank adaptation of pre-trained point-cloud transformers."""

__version__ = "0.1.0"
