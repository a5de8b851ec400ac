"""Fixtures for the pure core's tests: none of their own yet; they take values, and `pki`."""
