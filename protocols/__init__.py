"""protocols: the federated protocols and everything that orchestrates them (the top layer).
May import secagg, rfa, dp and membership; none of them imports protocols.

Subpackages by role, lowest first: ``data``, ``models``, ``clients``, ``rules``, ``attacks``;
``simulation`` (parameter sharing, RunConfig, the protocol registry) and ``cronus``;
``runner`` (make_simulation); ``integrations`` (Flower), ``experiments`` (audit, tradeoff,
reproduce), ``bench``; ``cli`` on top. It may import secagg, rfa, dp and membership; none of
them imports it. docs/architecture.md is the map.
"""
