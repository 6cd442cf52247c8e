"""Proof-of-compute in the daemon: the worker's attestation and challenge answers, the sentry."""
