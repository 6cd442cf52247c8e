// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {Hashes} from "@openzeppelin/contracts/utils/cryptography/Hashes.sol";
import {MerkleProof} from "@openzeppelin/contracts/utils/cryptography/MerkleProof.sol";

/// @title The hashing of a tree shown in parts (EpochLeaves.sol), apart from the settlement
/// contract.
/// @notice Pure, so it holds nothing and any caller gets the same answer. It lives in its own
/// contract, created by the settlement contract's constructor, only because the settlement
/// contract's code is at the 24 KiB limit (EIP-170): a demand for the leaves or the entries is
/// rare, and the external call costs a few hundred gas against millions for the parts.
contract TreeParts {
    uint256 internal constant MAX_PARTS = 256; // one bit each in the settlement's bit sets

    error BadNodes(uint256 count);
    error EntriesUnordered(uint256 index);
    error LengthMismatch();

    /// @notice The root that `nodes`, a tree's nodes at one depth left to right (2**d of
    /// them, at most MAX_PARTS), hash up to pairwise.
    function nodesRoot(bytes32[] calldata nodes) external pure returns (bytes32) {
        uint256 k = nodes.length;
        if (k == 0 || k > MAX_PARTS || k & (k - 1) != 0) revert BadNodes(k);
        bytes32[] memory level = nodes;
        for (; k > 1; k /= 2) {
            for (uint256 i = 0; i < k / 2; i++) {
                level[i] = Hashes.commutativeKeccak256(level[2 * i], level[2 * i + 1]);
            }
        }
        return level[0];
    }

    /// @notice The node that `hashes`, in strictly ascending order, hash to as a multiproof of
    /// all of them (no proof hashes, every flag true): only the whole set of leaves under a
    /// node passes so (a leaf hashes 32 bytes and a node 64, so neither stands for the other).
    function partRoot(bytes32[] memory hashes) external pure returns (bytes32) {
        uint256 n = hashes.length;
        if (n == 0) revert LengthMismatch();
        bool[] memory flags = new bool[](n - 1);
        for (uint256 i = 1; i < n; i++) {
            if (hashes[i] <= hashes[i - 1]) revert EntriesUnordered(i);
            flags[i - 1] = true; // every sibling is a shown node
        }
        return MerkleProof.processMultiProof(new bytes32[](0), flags, hashes);
    }
}
