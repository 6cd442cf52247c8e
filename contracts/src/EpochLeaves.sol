// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {Hashes} from "@openzeppelin/contracts/utils/cryptography/Hashes.sol";
import {MerkleProof} from "@openzeppelin/contracts/utils/cryptography/MerkleProof.sol";
import {EpochAudits} from "./EpochAudits.sol";

/// @title A pending anchor's earnings leaves, shown on demand.
/// @notice Watching a worker's leaf needs the leaves, which only the anchorer has. One that
/// withholds them could credit a colluder that earned nothing (the anchor's debits are real;
/// the leaf takes from what the other workers would claim), and nobody could show the leaf.
///
///   what                        who may raise it   how it ends
///   the leaves not published    anyone bonded      the anchorer shows every leaf, or void
///   a worker left out of them   anyone             void once every part is shown without
///                                                  it, with its entries or last final leaf
///
/// A bonded watcher demands the leaves (`disputeLeaves`); the anchorer shows every one, in
/// parts (`answerLeaves`): the earnings tree's `nodes` at one depth (2**d of them, d >= 0, the
/// root alone at 0), which hash up to the root, and under each node its leaves, which hash up
/// to it with a multiproof of no proof hashes, all flags true. Such a multiproof passes only
/// the whole set under the node (a leaf hashes 32 bytes and a node 64, so neither can stand
/// for the other), so once every part is shown every leaf is. Parts keep each transaction
/// within a block's gas and a node's size limit as the tree grows (it names every worker ever
/// paid): up to 256 parts. A part's leaves must come in strictly ascending hash order, as an
/// OpenZeppelin tree sorts them, so a tree of one part that is not the canonical one (leaves
/// out of order, or one twice), which nobody else could rebuild, cannot be answered. A worker
/// left out is shown the same way, a part at a time (`showAbsent`). The leaves go out in
/// `LeavesShown` events (so an anchorer answering through a contract of its own cannot hide
/// them). Once the last part is shown the window runs again from then, for the leaves to be
/// disputed (`disputeEarnings`) and voided for.
abstract contract EpochLeaves is EpochAudits {
    uint256 internal constant MAX_PARTS = 256; // one bit each in partsShown

    /// keccak256(epoch, nodes) => the parts shown under those nodes, one bit each
    mapping(bytes32 => uint256) public partsShown;
    /// keccak256(epoch, worker, nodes) => the parts shown not to name the worker, one bit each
    mapping(bytes32 => uint256) public partsWithout;

    /// One part: the leaves under one node, in the order of a multiproof of all of them.
    struct Part {
        address[] workers;
        uint256[] cumulatives;
    }

    event LeavesShown(uint64 indexed epoch, bytes32[] nodes, uint256 part, address[] workers,
        uint256[] cumulatives);

    error BadNodes(uint256 count);
    error NotMissing(address worker);
    error PartsMissing(uint256 shown);

    /// @notice Say the pending anchor's earnings leaves were not published: its anchorer must
    /// show them all (`answerLeaves`).
    function disputeLeaves(uint64 epoch) external {
        Anchor storage a = _bondedWindow(epoch);
        _openSum(epoch, a, Sum.Leaves, address(0), 0);
    }

    /// @notice Show part `part` of the pending anchor's leaves: those under `nodes[part]`.
    /// The last part shown answers the demand.
    function answerLeaves(uint64 epoch, bytes32[] calldata nodes, uint256 part,
        Part calldata leaves) external {
        Anchor storage a = _byAnchorer(epoch);
        SumDispute storage d = _toAnswer(_sumKey(epoch, Sum.Leaves, address(0), 0));
        _checkNodes(a, nodes);
        _checkPart(nodes, part, leaves);
        bytes32 key = keccak256(abi.encode(epoch, nodes));
        uint256 shown = partsShown[key] | (1 << part);
        partsShown[key] = shown;
        emit LeavesShown(epoch, nodes, part, leaves.workers, leaves.cumulatives);
        if (shown != _allParts(nodes)) return;
        _answered(epoch, a, d, Sum.Leaves, address(0));
        uint64 until = uint64(block.timestamp) + _disputeWindow();
        if (until > a.disputeDeadline) a.disputeDeadline = until;
    }

    /// @notice Show that part `part` of the pending anchor's leaves (those under
    /// `nodes[part]`, from gossip or from `LeavesShown`) does not name `worker`.
    function showAbsent(uint64 epoch, address worker, bytes32[] calldata nodes, uint256 part,
        Part calldata leaves) external {
        Anchor storage a = _fraudOpen(epoch);
        _checkNodes(a, nodes);
        _checkPart(nodes, part, leaves);
        for (uint256 i = 0; i < leaves.workers.length; i++) {
            if (leaves.workers[i] == worker) revert NotMissing(worker);
        }
        partsWithout[keccak256(abi.encode(epoch, worker, nodes))] |= 1 << part;
    }

    /// @notice Void the pending anchor for leaving `worker` out: every part of its leaves under
    /// `nodes` was shown not to name it (`showAbsent`), yet it held a leaf in the last final
    /// root (`base`) or earned this epoch (its entries among `shown`).
    function voidMissingLeaf(uint64 epoch, address worker, Base calldata base, Shown calldata shown,
        bytes32[] calldata nodes, address[] calldata requesters, uint256[] calldata amounts)
        external nonReentrant {
        Anchor storage a = _fraudOpen(epoch);
        _checkNodes(a, nodes);
        uint256 without = partsWithout[keccak256(abi.encode(epoch, worker, nodes))];
        if (without != _allParts(nodes)) revert PartsMissing(without);
        uint256 owed = _baseOf(worker, base) + _netFloor(_added(a.entriesRoot, Sum.Earnings, worker, shown));
        if (owed == 0) revert NotMissing(worker);
        _void(epoch, a, _sumKey(epoch, Sum.Leaves, worker, owed), msg.sender, requesters, amounts);
    }

    /// `nodes` must be the earnings tree's nodes at one depth, left to right: 2**d of them
    /// (at most MAX_PARTS) hashing pairwise up to its root.
    function _checkNodes(Anchor storage a, bytes32[] calldata nodes) private view {
        uint256 k = nodes.length;
        if (k == 0 || k > MAX_PARTS || k & (k - 1) != 0) revert BadNodes(k);
        bytes32[] memory level = nodes;
        for (; k > 1; k /= 2) {
            for (uint256 i = 0; i < k / 2; i++) {
                level[i] = Hashes.commutativeKeccak256(level[2 * i], level[2 * i + 1]);
            }
        }
        if (level[0] != a.earningsRoot) revert NotInTree();
    }

    /// `leaves` must be every leaf under `nodes[part]`, in strictly ascending hash order: they
    /// hash to it as a multiproof of all of them (no proof hashes, every flag true).
    function _checkPart(bytes32[] calldata nodes, uint256 part, Part calldata leaves) private pure {
        uint256 n = leaves.workers.length;
        if (n == 0 || leaves.cumulatives.length != n) revert LengthMismatch();
        bytes32[] memory hashes = new bytes32[](n);
        bool[] memory flags = new bool[](n - 1);
        for (uint256 i = 0; i < n; i++) {
            hashes[i] = _earningsLeaf(leaves.workers[i], leaves.cumulatives[i]);
            if (i > 0 && hashes[i] <= hashes[i - 1]) revert EntriesUnordered(i);
        }
        for (uint256 i = 0; i + 1 < n; i++) flags[i] = true; // every sibling is a shown node
        bytes32 root = MerkleProof.processMultiProof(new bytes32[](0), flags, hashes);
        if (part >= nodes.length || root != nodes[part]) revert NotInTree();
    }

    /// The bits of every part under `nodes` (2**d of them, at most MAX_PARTS).
    function _allParts(bytes32[] calldata nodes) private pure returns (uint256) {
        return type(uint256).max >> (MAX_PARTS - nodes.length);
    }
}
