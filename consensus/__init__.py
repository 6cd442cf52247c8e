"""Pure protocol logic: messages, signing, market, proof-of-compute, settlement maths.

Nothing in this package performs I/O or reads a clock: time is passed in as ``now_ms``. It may
import only the standard library, msgpack, pynacl and blake3 (and eth-hash / eth-abi for keccak).
"""
