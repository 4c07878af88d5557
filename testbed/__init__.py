"""Test beds: the scenarios, processes and readiness waits of tests/, bench/ and notebooks/."""
