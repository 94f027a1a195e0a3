"""protocols: the federated protocols and everything that orchestrates them.

Data, models, vectorized clients, aggregation rules, simulation, benchmarks and
the ``fedaudit`` command line. This is the top layer: it may import secagg,
rfa, dp and membership; none of them imports it.
"""
