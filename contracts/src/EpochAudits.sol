// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {MerkleProof} from "@openzeppelin/contracts/utils/cryptography/MerkleProof.sol";
import {Epochs} from "./Epochs.sol";

/// @title Audits of a pending anchor against its own entries.
/// @notice A requester's entry dispute (Epochs.sol) catches an entry it never signed. These catch
/// an anchor whose sums do not follow from its entries, which no single entry shows:
///
///   what                        who may raise it   how it ends
///   an earnings leaf too high   anyone bonded      the anchorer shows entries adding up, or void
///   a requester's debit         that requester     the anchorer shows entries adding up, or void
///   a line counted twice        anyone             void at once, with the two entries as proof
///   a debit below the entries   anyone             void at once, with the requester's entries
///   an earnings leaf too low    anyone             void at once, with the worker's entries
///   a `previous` too high       anyone bonded      the anchorer shows the line's final entry, or void
///   the leaves not published    anyone bonded      EpochLeaves.sol
///   the entries not published   anyone bonded      EpochLeaves.sol
///   a worker left out of them   anyone             EpochLeaves.sol
///
/// Sum disputes open in the anchor's window (a `previous` one until the grace ends, like an
/// entry dispute, as an answer may show its entry), each once (an answered one stays answered). An
/// answer reveals entries (perhaps never gossiped, of a requester that was never debited), so
/// it keeps the anchor open for another window (`graceEnd`): its requesters may dispute them and
/// anyone may show a debit below them, before the anchor can become final. Only the anchorer
/// answers (so none can be answered behind its back). An anchor is final at most about eight
/// windows after its post, however many disputes it gets: sum disputes open in the window,
/// each once; a leaves or entries answer moves the window's end at most two windows on, and
/// the other demand, raised just before that end, two more; the grace ends within two windows
/// of the last end; an entry or `previous` dispute raised just before it has one more window
/// to be answered. (Six without an entries demand: the code size limit left no room to keep
/// both demands to the first window.)
///
/// Each entry carries `previous`, its line's amount in the last final anchor, so an entry adds
/// `amount - previous` this epoch. A worker's leaf may grow over its leaf in the last final root
/// (`claimRoot`, while this anchor is pending) by at most what its entries add net of the fee
/// (`_netCeil`), and by at least that less a few wei (`_netFloor`), and a requester
/// may be debited at most what its entries add: the anchorer answers with those entries, each
/// in the entries root (one multiproof, leaves strictly ascending, so none is counted twice).
/// A `previous` below the line's amount in an earlier final anchor, or two entries for one line
/// in one anchor, would count the same voucher twice: either voids the anchor on sight. A
/// `previous` above it lowers what the line pays this epoch, and its requester's debit with it,
/// though the worker holds the voucher: disputed, the anchorer must show the line's entry in a
/// final anchor with exactly that amount (no final entry is above the last one's: an entry below
/// an earlier one's amount voids as above).
/// Together with the entry disputes no worker's leaf grows by more than vouchers its requesters
/// signed, and no requester pays more than its vouchers add up to, as long as someone watches.
abstract contract EpochAudits is Epochs {
    enum Sum {
        None,
        Earnings, // party: a worker; amount: its cumulative leaf in the pending root
        Debit, // party: a requester; amount: what the pending anchor debits its pool
        Leaves, // party: address(0); amount: 0 (every leaf of the earnings root)
        Previous, // party: address(0); amount: an entry's leaf (its `previous` shown final)
        Entries // party: address(0); amount: 0 (every entry of the entries root)
    }

    struct SumDispute {
        uint64 answerBy;
        address disputer;
    }

    /// A worker's leaf in the last final root, with its proof.
    struct Base {
        uint256 amount;
        bytes32[] proof;
    }

    /// Entries of one party in the pending anchor: a multiproof of its entries root, the
    /// entries in the proof's order (their leaves strictly ascending).
    struct Shown {
        Entry[] entries;
        bytes32[] proof;
        bool[] flags;
    }

    /// keccak256(epoch, kind, party, amount) => an open sum dispute (answerBy 0: none)
    mapping(bytes32 => SumDispute) public sumDisputes;

    event SumDisputed(uint64 indexed epoch, Sum kind, address indexed party, uint256 amount,
        address disputer, uint64 answerBy);
    event SumAnswered(uint64 indexed epoch, Sum kind, address indexed party);
    /// What a sum answer showed (entries perhaps never gossiped), for its requesters and the
    /// watchers to check: an event, so an answer sent through a contract is read all the same.
    event EntriesShown(uint64 indexed epoch, Sum kind, address indexed party, Shown shown);

    error SumShort(uint256 shown, uint256 owed);
    error NotOfParty(address party, address requester, address worker);
    error EntriesUnordered(uint256 index);
    error NoConflict();
    error NotFinalEpoch(uint64 epoch);
    error NotLow(uint256 leaf, uint256 floor);

    /// @notice Say worker `worker`'s leaf in the pending anchor, `cumulative`, is more than its
    /// entries add to its leaf in the last final root.
    function disputeEarnings(uint64 epoch, address worker, uint256 cumulative, bytes32[] calldata proof)
        external {
        Anchor storage a = _bondedWindow(epoch);
        if (!MerkleProof.verifyCalldata(proof, a.earningsRoot, _earningsLeaf(worker, cumulative))) {
            revert NotInTree();
        }
        _openSum(epoch, a, Sum.Earnings, worker, cumulative);
    }

    /// @notice The caller says the pending anchor (its debit list given again) debits its pool
    /// more than its entries add: every debit naming it counts, however often it is named.
    function disputeDebit(uint64 epoch, address[] calldata requesters, uint256[] calldata amounts)
        external {
        Anchor storage a = _windowOpen(epoch);
        uint256 debited = _debitOf(a, msg.sender, requesters, amounts);
        if (debited == 0) revert NotYourEntry(address(0), msg.sender);
        _openSum(epoch, a, Sum.Debit, msg.sender, debited);
    }

    /// @notice Answer a sum dispute with the party's entries in the pending anchor and, for a
    /// worker's earnings, its leaf in the last final root (`base.amount` 0 and no proof: none).
    function answerSum(uint64 epoch, Sum kind, address party, uint256 amount, Base calldata base,
        Shown calldata shown) external {
        Anchor storage a = _byAnchorer(epoch); // it holds the grace
        if (kind >= Sum.Leaves) revert NoDispute(bytes32(0)); // answered by their own calls
        SumDispute storage d = _toAnswer(_sumKey(epoch, kind, party, amount));
        uint256 owed = amount;
        if (kind == Sum.Earnings) { // a debit has no base
            uint256 before = _baseOf(party, base);
            owed = before >= owed ? 0 : owed - before;
        }
        uint256 added = _added(a.entriesRoot, kind, party, shown);
        if (kind == Sum.Earnings) added = _netCeil(added); // a worker gets its share, net of the fee
        if (added < owed) revert SumShort(added, owed);
        _answered(epoch, a, d, kind, party);
        uint64 grace = uint64(block.timestamp) + _disputeWindow();
        if (grace > a.graceEnd) a.graceEnd = grace;
        emit EntriesShown(epoch, kind, party, shown);
    }

    /// @notice Say entry `e` of the pending anchor names a `previous` (not 0: a new line) that
    /// is not its line's amount in the last final anchor. Open as long as entries can be
    /// disputed (`_fraudOpen`), like a requester's entry dispute: a sum answer may show the
    /// entry first. Its answer opens no grace, so the anchor's end stays bounded.
    function disputePrevious(uint64 epoch, Entry calldata e, bytes32[] calldata proof) external {
        Anchor storage a = _fraudOpen(epoch);
        _bonded();
        if (e.previous == 0) revert NoConflict();
        bytes32 leaf = entryLeaf(e);
        if (!MerkleProof.verifyCalldata(proof, a.entriesRoot, leaf)) revert NotInTree();
        _openSum(epoch, a, Sum.Previous, address(0), uint256(leaf));
    }

    /// @notice Answer a dispute of entry `e`'s `previous` with its line's entry `o` in final
    /// anchor `other` (and `o`'s proof there), whose amount is exactly `e.previous`. Never the
    /// pending anchor: `e` itself would answer a `previous` equal to its amount.
    function answerPrevious(uint64 epoch, Entry calldata e, uint64 other, Entry calldata o,
        bytes32[] calldata otherProof) external {
        if (other >= epoch) revert NotFinalEpoch(other);
        Anchor storage a = _byAnchorer(epoch);
        SumDispute storage d = _toAnswer(_sumKey(epoch, Sum.Previous, address(0), uint256(entryLeaf(e))));
        _sameLineIn(a, epoch, e, other, o, otherProof);
        if (o.amount != e.previous) revert SumShort(o.amount, e.previous);
        _answered(epoch, a, d, Sum.Previous, address(0));
    }

    /// @notice Void the anchor once a sum dispute's answer time is over unanswered; the bond's
    /// reward goes to whoever raised it.
    function voidSum(uint64 epoch, Sum kind, address party, uint256 amount,
        address[] calldata requesters, uint256[] calldata amounts) external nonReentrant {
        Anchor storage a = _pendingAt(epoch);
        bytes32 key = _sumKey(epoch, kind, party, amount);
        SumDispute storage d = sumDisputes[key];
        if (d.answerBy == 0 || d.answerBy == ANSWERED) revert NoDispute(key);
        if (block.timestamp < d.answerBy) revert AnswerTimeNotOver(d.answerBy);
        _void(epoch, a, key, d.disputer, requesters, amounts);
    }

    /// @notice Void the pending anchor for crediting `worker` less than it earned: its leaf
    /// `cumulative` grew over its leaf in the last final root (`base`; amount 0 and no proof:
    /// none, or not shown, which only lowers the bound) by less than its entries among `shown`
    /// add, net of the fee. Nobody gains by it alone, but the worker would wait, and with a
    /// leaf raised elsewhere it moves one worker's pay to another.
    function voidLowLeaf(uint64 epoch, address worker, uint256 cumulative, bytes32[] calldata proof,
        Base calldata base, Shown calldata shown, address[] calldata requesters,
        uint256[] calldata amounts) external nonReentrant {
        Anchor storage a = _fraudOpen(epoch);
        if (!MerkleProof.verifyCalldata(proof, a.earningsRoot, _earningsLeaf(worker, cumulative))) {
            revert NotInTree();
        }
        uint256 floor = _baseOf(worker, base) + _netFloor(_added(a.entriesRoot, Sum.Earnings, worker, shown));
        if (cumulative >= floor) revert NotLow(cumulative, floor);
        _void(epoch, a, _sumKey(epoch, Sum.None, worker, cumulative), msg.sender, requesters, amounts);
    }

    /// @notice Void the pending anchor for debiting `requester` less than its entries among
    /// `shown` add (the rest would be paid out of other requesters' money). `shown` may hold
    /// others' entries too, so a sum answer's own entries can be shown again as they were.
    function voidUnderDebit(uint64 epoch, address requester, address[] calldata requesters,
        uint256[] calldata amounts, Shown calldata shown) external nonReentrant {
        Anchor storage a = _fraudOpen(epoch);
        uint256 debited = _debitOf(a, requester, requesters, amounts);
        uint256 added = _added(a.entriesRoot, Sum.None, requester, shown);
        if (added <= debited) revert SumShort(added, debited);
        _void(epoch, a, _sumKey(epoch, Sum.Debit, requester, debited), msg.sender, requesters, amounts);
    }

    /// @notice Void the pending anchor for counting a voucher twice: entry `e` of it and entry
    /// `o` of the same line, either in the same anchor (`other == epoch`) and different, or in
    /// final anchor `other` with an amount above `e.previous`.
    function voidConflict(uint64 epoch, Entry calldata e, bytes32[] calldata proof, uint64 other,
        Entry calldata o, bytes32[] calldata otherProof, address[] calldata requesters,
        uint256[] calldata amounts) external nonReentrant {
        Anchor storage a = _fraudOpen(epoch);
        bytes32 leaf = entryLeaf(e);
        if (!MerkleProof.verifyCalldata(proof, a.entriesRoot, leaf)) revert NotInTree();
        _sameLineIn(a, epoch, e, other, o, otherProof);
        if (other == epoch ? entryLeaf(o) == leaf : o.amount <= e.previous) revert NoConflict();
        _void(epoch, a, leaf, msg.sender, requesters, amounts);
    }

    /// Checks that `o` is an entry of `e`'s line in anchor `other`: the pending one (`epoch`),
    /// or a final one, with `otherProof` its proof there.
    function _sameLineIn(Anchor storage a, uint64 epoch, Entry calldata e, uint64 other,
        Entry calldata o, bytes32[] calldata otherProof) private view {
        if (e.requester != o.requester || e.worker != o.worker || e.job != o.job || e.task != o.task) {
            revert NoConflict();
        }
        bytes32 root = other == epoch ? a.entriesRoot : finalEntries[other];
        if (root == bytes32(0)) revert NotFinalEpoch(other);
        if (!MerkleProof.verifyCalldata(otherProof, root, entryLeaf(o))) revert NotInTree();
    }

    /// The amount is part of the key: a dispute of one leaf (a root may hold two for a worker)
    /// cannot hold off another's.
    function _sumKey(uint64 epoch, Sum kind, address party, uint256 amount) internal pure returns (bytes32) {
        return keccak256(abi.encode(epoch, kind, party, amount));
    }

    /// The open sum dispute `key`, while it can still be answered.
    function _toAnswer(bytes32 key) internal view returns (SumDispute storage d) {
        d = sumDisputes[key];
        if (d.answerBy == 0 || d.answerBy == ANSWERED) revert NoDispute(key);
        if (block.timestamp >= d.answerBy) revert AnswerTimeOver(d.answerBy);
    }

    function _openSum(uint64 epoch, Anchor storage a, Sum kind, address party, uint256 amount) internal {
        bytes32 key = _sumKey(epoch, kind, party, amount);
        if (sumDisputes[key].answerBy != 0) revert AlreadyDisputed(key);
        uint64 answerBy = uint64(block.timestamp) + _disputeWindow();
        sumDisputes[key] = SumDispute(answerBy, msg.sender);
        a.openDisputes += 1;
        emit SumDisputed(epoch, kind, party, amount, msg.sender, answerBy);
    }

    /// `worker`'s leaf in the last final root, as `base` shows it (0: none shown).
    function _baseOf(address worker, Base calldata base) internal view returns (uint256) {
        if (base.amount > 0
            && !MerkleProof.verifyCalldata(base.proof, claimRoot, _earningsLeaf(worker, base.amount))) {
            revert NotInTree();
        }
        return base.amount;
    }

    /// What `shown.entries` add this epoch, each checked to be `party`'s (with kind None: any
    /// entries, those of requester `party` counted) and in `root`, none twice.
    function _added(bytes32 root, Sum kind, address party, Shown calldata shown)
        internal pure returns (uint256 added) {
        uint256 n = shown.entries.length;
        bytes32[] memory leaves = new bytes32[](n);
        for (uint256 i = 0; i < n; i++) {
            Entry calldata e = shown.entries[i];
            bool mine = (kind == Sum.Earnings ? e.worker : e.requester) == party;
            if (!mine && kind != Sum.None) revert NotOfParty(party, e.requester, e.worker);
            leaves[i] = entryLeaf(e);
            if (i > 0 && leaves[i] <= leaves[i - 1]) revert EntriesUnordered(i);
            if (mine) added += e.amount - e.previous;
        }
        if (n > 0 && !MerkleProof.multiProofVerifyCalldata(shown.proof, shown.flags, root, leaves)) {
            revert NotInTree();
        }
    }

    /// What anchor `a` (its debit list given again, checked) debits `requester`, however often
    /// the list names it.
    function _debitOf(Anchor storage a, address requester, address[] calldata requesters,
        uint256[] calldata amounts) private view returns (uint256 debited) {
        if (keccak256(abi.encode(requesters, amounts)) != a.debitsHash) revert DebitsMismatch();
        for (uint256 i = 0; i < requesters.length; i++) {
            if (requesters[i] == requester) debited += amounts[i];
        }
    }

    function _answered(uint64 epoch, Anchor storage a, SumDispute storage d, Sum kind, address party)
        internal {
        d.answerBy = ANSWERED; // answered stays answered: it cannot be raised again
        a.openDisputes -= 1;
        emit SumAnswered(epoch, kind, party);
    }

    /// The pending anchor, its window open, for a bonded watcher to dispute.
    function _bondedWindow(uint64 epoch) internal view returns (Anchor storage a) {
        a = _windowOpen(epoch);
        _bonded();
    }

    /// The pending anchor, answered by its anchorer only.
    function _byAnchorer(uint64 epoch) internal view returns (Anchor storage a) {
        a = _pendingAt(epoch);
        if (msg.sender != a.anchorer) revert NotAnchorer(msg.sender, 0);
    }

    function _windowOpen(uint64 epoch) internal view returns (Anchor storage a) {
        a = _pendingAt(epoch);
        if (block.timestamp >= a.disputeDeadline) revert WindowClosed(epoch, a.disputeDeadline);
    }

}
