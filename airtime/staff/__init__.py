"""Staff authentication beyond the password: TOTP two-factor."""
