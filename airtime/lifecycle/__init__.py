"""Number keeping: line lifecycle, the sweep, reminders and low-balance alerts."""
