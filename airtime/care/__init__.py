"""Customer care: the audit log, the console's search, timeline, queues and actions,
maker-checker balance adjustments and subscribers' "missing top-up" disputes."""
