"""``idlegrid localnet``: a whole idlegrid network on one machine, for newcomers and tests.

- :mod:`node.localnet.net`: start, status and stop of the whole network;
- :mod:`node.localnet.nodes`: each node's data dir, config and daemon;
- :mod:`node.localnet.chain`: the shared chain (anvil, or :mod:`node.localnet.chain_server`),
  the contract, funds and stakes;
- :mod:`node.localnet.state`: what runs, in ``DIR/localnet.json``;
- :mod:`node.localnet.procs`: detached processes, waiting, stopping.
"""
