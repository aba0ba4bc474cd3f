"""Database layer: engine, unit of work, base model."""
