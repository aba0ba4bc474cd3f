"""Resellers (agents): a prepaid float, commission, sub-agents, a signed API and statements."""
