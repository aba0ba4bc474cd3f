"""The ledger: the only place that posts money."""
