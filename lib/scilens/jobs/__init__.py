"""Job definitions; ``scilens.cli.JOBS`` maps names to them."""
