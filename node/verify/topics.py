"""Proof-of-compute's gossip topics and direct protocol."""

from __future__ import annotations

from p2p.gossip import topic_name

ATTESTS = topic_name("attestations")
SEEDS = topic_name("seeds")
VERDICTS = topic_name("verdicts")
# Sentries' escalations of cross-class misses: a topic of its own, so that nodes that predate
# the kind never see it (on the verdicts topic they would reject it and blame the forwarder).
ESCALATIONS = topic_name("escalations")
CHALLENGE = "/idlegrid/verify/challenge/1"
# A bisecting sentry's probe of a worker's state inside a segment (consensus.verify.bisection);
# answering replays up to one segment, so it may take as long as the segment took.
PROBE = "/idlegrid/verify/probe/1"
PROBE_TIMEOUT_S = 600.0
CHALLENGE_MAX_BYTES = 64 << 20  # an answer carries at most two files inline
INLINE_MAX_BYTES = 16 << 20  # a bigger checkpoint file goes by reference (the blob protocol)
ATTESTATION_TTL_MS = 10 * 60_000  # gossip refuses longer-lived envelopes; kept in sqlite anyway
QOS = topic_name("qos")  # sentries' QoS reports on workers
QOS_PROBE = "/idlegrid/qos/1"  # a sentry's benchmark probe of a worker (direct)
QOS_MAX_BYTES = 64 << 10  # an answer carries at most 8192 row sums (32 KiB)
