"""The three uses of the README: ``audit`` (leakage per server view), ``tradeoff`` (the sweep) and
``reproduce`` (the seeds' claims), with their shared run options. Imports everything below the CLI."""
