"""Payment providers behind one protocol, and their webhooks."""
