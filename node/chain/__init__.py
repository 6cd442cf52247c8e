"""Settlement on an EVM chain: the contract's artifacts, a chain backend (the embedded
in-process EVM or any JSON-RPC endpoint), a journaled transaction client, EIP-712 signing,
and a trio service that runs all of it in one worker thread.
"""
