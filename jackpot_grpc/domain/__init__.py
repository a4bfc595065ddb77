"""Pure rules of the jackpot: no I/O, no imports from the rest of the package."""
