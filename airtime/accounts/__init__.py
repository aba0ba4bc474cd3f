"""Customers, their lines, staff users and authentication."""
