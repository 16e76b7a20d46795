"""Reliability tests: a corpus of bad inputs, injected faults and security checks (see README, Reliability)."""
