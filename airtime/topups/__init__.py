"""Top-up orders for every channel, their state machine, bundles, promotions and validity."""
