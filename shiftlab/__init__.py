"""shiftlab: measure the off-policy gap of DPO."""

__version__ = "0.1.0"
