"""Settlement maths, pure: EIP-712 digests for vouchers and slashing evidence, fee splits.

What the contract in ``contracts/src/IdlegridSettlement.sol`` computes, computed the same way
off chain, so that a requester signs and a worker checks a voucher without touching the chain.
"""
