"""The embedded world's oracle, VADER; it lives in `shiftlab.oracles` with the other oracles."""

from shiftlab.oracles import VaderOracle

__all__ = ["VaderOracle"]
