"""Auto top-up: saved payment methods, rules per line and the job that charges them."""
