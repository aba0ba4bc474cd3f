"""The ``airtime`` command."""
