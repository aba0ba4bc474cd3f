"""Email and SMS: an outbox written in the caller's transaction, sent after commit."""
