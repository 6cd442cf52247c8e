// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

/// @title A TEST contract that forwards its owner's calls.
/// @notice For tests only: an anchorer that acts through a contract of its own, so what it sends
/// is not in its transaction's call data (tests/chain/test_forwarded_answers.py).
contract TestForwarder {
    address public immutable owner;

    constructor() {
        owner = msg.sender;
    }

    /// @notice Call `to` with `data` and the value sent; revert with its revert.
    function forward(address to, bytes calldata data) external payable returns (bytes memory out) {
        require(msg.sender == owner, "not the owner");
        bool ok;
        (ok, out) = to.call{value: msg.value}(data);
        if (!ok) {
            assembly {
                revert(add(out, 32), mload(out))
            }
        }
    }

    receive() external payable {}
}
