"""Bridges to other federated frameworks: Flower (``protocols.integrations.flower``, extra ``flower``).
Imports protocols.simulation and the packages below it; never experiments or the CLI."""
