"""The `thinkrl` console script: the same entry point as `python -m train`."""

from train.main import main

__all__ = ["main"]
