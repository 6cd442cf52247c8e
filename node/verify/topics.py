"""Proof-of-compute's gossip topics and direct protocol."""

from __future__ import annotations

from p2p.gossip import topic_name

ATTESTS = topic_name("attestations")
SEEDS = topic_name("seeds")
VERDICTS = topic_name("verdicts")
CHALLENGE = "/idlegrid/verify/challenge/1"
CHALLENGE_MAX_BYTES = 64 << 20  # an answer carries one checkpoint file
ATTESTATION_TTL_MS = 10 * 60_000  # gossip refuses longer-lived envelopes; kept in sqlite anyway
