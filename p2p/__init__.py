"""libp2p host, gossip topics and validators, direct-stream protocols, discovery, transfer."""
