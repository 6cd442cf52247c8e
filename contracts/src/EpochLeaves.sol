// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {EpochAudits} from "./EpochAudits.sol";
import {TreeParts} from "./TreeParts.sol";

/// @title A pending anchor's earnings leaves, or its entries, shown on demand.
/// @notice Watching a worker's leaf needs the leaves, which only the anchorer has. One that
/// withholds them could credit a colluder that earned nothing (the anchor's debits are real;
/// the leaf takes from what the other workers would claim), and nobody could show the leaf.
/// Watching a line needs its entry: one withheld whose `previous` is raised to its own amount
/// adds nothing, so no leaf looks wrong, yet the line's final amount jumps and its worker is
/// never paid the rest of the voucher it holds (a requester and an anchorer together gain so).
///
///   what                        who may raise it   how it ends
///   the leaves not published    anyone bonded      the anchorer shows every leaf, or void
///   the entries not published   anyone bonded      the anchorer shows every entry, or void
///   a worker left out of them   anyone             void once every part is shown without
///                                                  it, with its entries or last final leaf
///
/// A bonded watcher demands the leaves (`disputeLeaves`) or the entries (`disputeEntries`);
/// the anchorer shows every one, in parts (`answerLeaves`, `answerEntries`): the tree's
/// `nodes` at one depth (2**d of them, d >= 0, the root alone at 0), which hash up to the
/// root, and under each node its leaves, which hash up to it with a multiproof of no proof
/// hashes, all flags true. Such a multiproof passes only the whole set under the node (a leaf
/// hashes 32 bytes and a node 64, so neither can stand for the other), so once every part is
/// shown every leaf is. Parts keep each transaction within a block's gas and a node's size
/// limit as the tree grows (the earnings tree names every worker ever paid): up to 256 parts.
/// A part's leaves must come in strictly ascending hash order, as an OpenZeppelin tree sorts
/// them, so a tree of one part that is not the canonical one (leaves out of order, or one
/// twice), which nobody else could rebuild, cannot be answered. A worker left out is shown
/// the same way, a part at a time (`showAbsent`). The parts go out in `LeavesShown` and
/// `EntriesPartShown` events (so an anchorer answering through a contract of its own cannot
/// hide them). Once the last part is shown the window runs again from then, for the leaves to
/// be disputed (`disputeEarnings`) and voided for, or an entry's `previous` (`disputePrevious`).
/// The hashing of the parts is in `TreeParts.sol`: this contract is at the code size limit.
abstract contract EpochLeaves is EpochAudits {
    uint256 internal constant MAX_PARTS = 256; // one bit each in partsShown
    TreeParts private immutable TREE_PARTS = new TreeParts();

    /// keccak256(epoch, kind, nodes) => the parts of a demanded tree shown under those nodes
    mapping(bytes32 => uint256) internal partsShown;
    /// keccak256(epoch, worker, nodes) => the parts shown not to name the worker, one bit each
    mapping(bytes32 => uint256) public partsWithout;

    /// One part: the leaves under one node, in the order of a multiproof of all of them.
    struct Part {
        address[] workers;
        uint256[] cumulatives;
    }

    event LeavesShown(uint64 indexed epoch, bytes32[] nodes, uint256 part, address[] workers,
        uint256[] cumulatives);
    event EntriesPartShown(uint64 indexed epoch, bytes32[] nodes, uint256 part, Entry[] entries);

    error BadNodes(uint256 count); // TreeParts' (its reverts pass through), named for the ABI
    error NotMissing(address worker);
    error PartsMissing(uint256 shown);

    /// @notice Say the pending anchor's earnings leaves were not published: its anchorer must
    /// show them all (`answerLeaves`).
    function disputeLeaves(uint64 epoch) external {
        _openSum(epoch, _bondedWindow(epoch), Sum.Leaves, address(0), 0);
    }

    /// @notice Say the pending anchor's entries were not published: its anchorer must show
    /// them all (`answerEntries`), so an entry that pays its worker less than the voucher it
    /// holds (a raised `previous`) can be disputed though no leaf looks wrong.
    function disputeEntries(uint64 epoch) external {
        _openSum(epoch, _bondedWindow(epoch), Sum.Entries, address(0), 0);
    }

    /// @notice Show part `part` of the pending anchor's leaves: those under `nodes[part]`.
    /// The last part shown answers the demand.
    function answerLeaves(uint64 epoch, bytes32[] calldata nodes, uint256 part,
        Part calldata leaves) external {
        _showPart(epoch, Sum.Leaves, nodes, part, _leafHashes(leaves));
        emit LeavesShown(epoch, nodes, part, leaves.workers, leaves.cumulatives);
    }

    /// @notice Show part `part` of the pending anchor's entries: those under `nodes[part]` of
    /// its entries tree. The last part shown answers the demand.
    function answerEntries(uint64 epoch, bytes32[] calldata nodes, uint256 part,
        Entry[] calldata entries) external {
        bytes32[] memory hashes = new bytes32[](entries.length);
        for (uint256 i = 0; i < entries.length; i++) hashes[i] = entryLeaf(entries[i]);
        _showPart(epoch, Sum.Entries, nodes, part, hashes);
        emit EntriesPartShown(epoch, nodes, part, entries);
    }

    /// Marks part `part` of a demanded tree (`kind`: Leaves or Entries) shown; the last part
    /// answers the demand and runs the window again, for what the parts show to be disputed.
    function _showPart(uint64 epoch, Sum kind, bytes32[] calldata nodes, uint256 part,
        bytes32[] memory hashes) private {
        Anchor storage a = _byAnchorer(epoch);
        SumDispute storage d = _toAnswer(_sumKey(epoch, kind, address(0), 0));
        _checkNodes(kind == Sum.Leaves ? a.earningsRoot : a.entriesRoot, nodes);
        _checkPart(nodes, part, hashes);
        bytes32 key = keccak256(abi.encode(epoch, kind, nodes));
        uint256 shown = partsShown[key] | (1 << part);
        partsShown[key] = shown;
        if (shown != _allParts(nodes)) return;
        _answered(epoch, a, d, kind, address(0));
        uint64 until = uint64(block.timestamp) + _disputeWindow();
        if (until > a.disputeDeadline) a.disputeDeadline = until;
    }

    /// @notice Show that part `part` of the pending anchor's leaves (those under
    /// `nodes[part]`, from gossip or from `LeavesShown`) does not name `worker`.
    function showAbsent(uint64 epoch, address worker, bytes32[] calldata nodes, uint256 part,
        Part calldata leaves) external {
        _checkNodes(_fraudOpen(epoch).earningsRoot, nodes);
        _checkPart(nodes, part, _leafHashes(leaves));
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
        _checkNodes(a.earningsRoot, nodes);
        uint256 without = partsWithout[keccak256(abi.encode(epoch, worker, nodes))];
        if (without != _allParts(nodes)) revert PartsMissing(without);
        uint256 owed = _baseOf(worker, base) + _netFloor(_added(a.entriesRoot, Sum.Earnings, worker, shown));
        if (owed == 0) revert NotMissing(worker);
        _void(epoch, a, _sumKey(epoch, Sum.Leaves, worker, owed), msg.sender, requesters, amounts);
    }

    /// `nodes` must be a tree's nodes at one depth, left to right: 2**d of them (at most
    /// MAX_PARTS) hashing pairwise up to its `root`.
    function _checkNodes(bytes32 root, bytes32[] calldata nodes) private view {
        if (TREE_PARTS.nodesRoot(nodes) != root) revert NotInTree();
    }

    /// `hashes` must be every leaf under `nodes[part]`, in strictly ascending order.
    function _checkPart(bytes32[] calldata nodes, uint256 part, bytes32[] memory hashes)
        private view {
        if (part >= nodes.length || TREE_PARTS.partRoot(hashes) != nodes[part]) revert NotInTree();
    }

    function _leafHashes(Part calldata leaves) private pure returns (bytes32[] memory hashes) {
        uint256 n = leaves.workers.length;
        if (leaves.cumulatives.length != n) revert LengthMismatch();
        hashes = new bytes32[](n);
        for (uint256 i = 0; i < n; i++) hashes[i] = _earningsLeaf(leaves.workers[i], leaves.cumulatives[i]);
    }

    /// The bits of every part under `nodes` (2**d of them, at most MAX_PARTS).
    function _allParts(bytes32[] calldata nodes) private pure returns (uint256) {
        return type(uint256).max >> (MAX_PARTS - nodes.length);
    }
}
