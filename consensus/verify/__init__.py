"""Proof-of-compute: attestations, the challenge seed, sampling, the sentry game, verdicts.

Pure (no I/O, time passed in). The worker attests a Merkle root over its chained checkpoint
hashes before the seed exists; sentries derive the sampled segments from a public seed, fetch
checkpoints i-1 and i, check them against the root, replay segment i with the runtime and
compare. See :mod:`consensus.verify.game` for the sentry's machine, and
:mod:`consensus.verify.escalation` for what happens to a miss in another determinism class.
"""
