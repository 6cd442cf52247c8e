// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {Hashes} from "@openzeppelin/contracts/utils/cryptography/Hashes.sol";
import {MerkleProof} from "@openzeppelin/contracts/utils/cryptography/MerkleProof.sol";
import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";
import {SafeCast} from "@openzeppelin/contracts/utils/math/SafeCast.sol";

/// @title Epoch settlement: pools, anchors, disputes and Merkle claims.
/// @notice The cheap path for many small jobs. A requester funds a pool. Once per epoch a bonded
/// anchorer posts two Merkle roots (OpenZeppelin standard trees, double-hashed leaves):
/// `earningsRoot` over (worker, cumulative earnings over all epochs) and `entriesRoot` over the
/// epoch's entries (requester, worker, job, task, cumulative voucher amount), together with
/// what each requester's pool pays this epoch; the contract refuses an anchor that its pools do
/// not cover, or that would take from a pool more in all (every anchor ever, less the voided
/// ones) than its requester authorised with an EIP-712 `Spend(requester, cumulative)` it signed
/// alongside its vouchers: a debit beyond what the vouchers add up to needs no dispute. For `disputeWindow` a requester can challenge an entry; the anchorer must answer
/// with that requester's EIP-712 voucher for exactly that amount, or the anchor is void, the
/// debits go back to the pools and the anchorer's bond is slashed. Once final, a worker claims
/// the increase of its cumulative leaf over what it claimed before, as rarely as it likes.
/// The protocol fee is taken once per epoch when it becomes final: the earnings leaves are net
/// of it, and together never exceed what the final anchors debited less their fees.
/// One anchor is pending at a time, held in one reused storage record (a fresh record per epoch
/// would cost 5 new storage slots, about 110k gas); history is in the events. A voided epoch is
/// re-anchored by the next one. A new anchor finalizes the previous one when its window is over.
abstract contract Epochs is ReentrancyGuardTransient {
    enum AnchorState {
        None,
        Pending,
        Final,
        Void
    }

    struct Anchor {
        bytes32 earningsRoot;
        bytes32 entriesRoot;
        bytes32 debitsHash; // keccak256(abi.encode(requesters, amounts)), to refund on void
        address anchorer;
        uint64 disputeDeadline;
        uint32 openDisputes;
        AnchorState state;
        uint64 graceEnd; // a sum dispute's answer reveals entries: they can be checked until then
        uint64 postedAt; // in the same slot as the two above: no extra storage written
        uint256 total;
    }

    // balance and debited share one slot, so a debit writes one cold slot, not two; 2**128
    // base units is far beyond any coin or token supply (SafeCast refuses more).
    struct Pool {
        uint128 balance;
        uint128 debited; // every anchor's debit ever, less the voided ones: at most the spend
        uint128 leaving; // asked back: still debitable until withdrawn
        uint64 leaveAt;
    }

    struct Entry {
        address requester;
        address worker;
        bytes32 job;
        bytes32 task;
        uint256 amount;
        uint256 previous; // the line's amount in the last final anchor (0: new line)
    }

    uint64 internal constant ANSWERED = type(uint64).max; // a dispute's answerBy once answered

    mapping(address => Pool) public pools;
    Anchor public pending; // the latest anchor: epoch `epochCount - 1`
    /// keccak256(epoch, entry leaf) => time by which the anchorer must answer (0: no dispute)
    mapping(bytes32 => uint64) public disputes;
    mapping(address => uint256) public earned; // cumulative claimed from anchors, per worker
    /// epoch => its entries root, once final: what a later entry's `previous` is checked against
    mapping(uint64 => bytes32) public finalEntries;
    uint64 public epochCount;
    bytes32 public claimRoot;
    // One slot for both, so a claim reads and writes one cold slot, not two (about 2k gas).
    // 2**128 wei is far beyond any coin supply.
    uint128 public anchoredFinal; // what final anchors made claimable (debits less fees)
    uint128 public anchoredClaimed;

    event PoolFunded(address indexed requester, uint256 amount, uint256 balance);
    event PoolLeaving(address indexed requester, uint256 amount, uint64 leaveAt);
    event PoolWithdrawn(address indexed requester, uint256 amount);
    /// The debits are in the event (the anchor keeps only their hash), so a void can give them
    /// again even for an anchor posted through a contract, whose call data is not the post's.
    event Anchored(uint64 indexed epoch, address indexed anchorer, bytes32 earningsRoot,
        bytes32 entriesRoot, uint256 total, address[] requesters, uint256[] amounts);
    event Finalized(uint64 indexed epoch, bytes32 earningsRoot);
    event Disputed(uint64 indexed epoch, bytes32 indexed leaf, address requester, uint64 answerBy);
    event Answered(uint64 indexed epoch, bytes32 indexed leaf);
    event Voided(uint64 indexed epoch, bytes32 indexed leaf, address anchorer, uint256 slashed);
    event EarningsClaimed(address indexed worker, uint256 cumulative, uint256 paid);
    event PayoutSkipped(address indexed worker, uint256 amount);

    error NotAnchorer(address caller, uint256 bonded);
    error PreviousPending(uint64 epoch);
    error LengthMismatch();
    error PoolShort(address requester, uint256 available, uint256 wanted);
    error NotPending(uint64 epoch);
    error NotLatest(uint64 epoch, uint64 latest);
    error WindowClosed(uint64 epoch, uint64 deadline);
    error WindowOpen(uint64 epoch, uint64 deadline);
    error DisputesOpen(uint64 epoch, uint32 open);
    error NotInTree();
    error NotYourEntry(address requester, address caller);
    error AlreadyDisputed(bytes32 leaf);
    error NoDispute(bytes32 leaf);
    error AnswerTimeNotOver(uint64 answerBy);
    error AnswerTimeOver(uint64 answerBy);
    error DebitsMismatch();
    error PoolOverdrawn(uint256 finalTotal, uint256 claimedTotal, uint256 wanted);
    error NotLeaving();
    error NothingToClaimYet(uint256 cumulative, uint256 alreadyClaimed);
    error SpendExceeded(address requester, uint256 debitedAfter, uint256 authorised);
    error BadSpendSignature(address requester, address signer);

    // ------------------------------------------------------------ hooks of the main contract
    function _bondOf(address who) internal view virtual returns (uint256);
    function _slashBond(address anchorer, address disputer) internal virtual returns (uint256);
    function _accrueFee(uint256 total) internal virtual returns (uint256 fee);
    /// The least a worker's leaf grows for entries adding `gross`: less the fee rounded up.
    function _netFloor(uint256 gross) internal view virtual returns (uint256);
    /// The most a worker's leaf grows for entries adding `gross`: less the fee rounded down, and
    /// a wei of the epoch's remainder.
    function _netCeil(uint256 gross) internal view virtual returns (uint256);
    function _voucherSigner(Entry calldata e, bytes calldata sig) internal view virtual returns (address);
    /// The address that signed `Spend(requester, cumulative)`; address(0) for a bad signature.
    function _spendSigner(address requester, uint256 cumulative, bytes calldata sig)
        internal view virtual returns (address);
    function _unbondingDelay() internal view virtual returns (uint64);
    function _anchorBond() internal view virtual returns (uint256);
    function _disputeWindow() internal view virtual returns (uint64);
    function _sendCoin(address to, uint256 amount) internal virtual;
    function _trySendCoin(address to, uint256 amount) internal virtual returns (bool);
    function _receiveCoin(uint256 amount) internal virtual;

    // ------------------------------------------------------------ pools

    /// @notice Add `amount` to the caller's pool (msg.value on coin, transferFrom on a token).
    function fund(uint256 amount) external payable {
        Pool storage p = pools[msg.sender];
        p.balance = SafeCast.toUint128(p.balance + amount);
        emit PoolFunded(msg.sender, amount, p.balance);
        _receiveCoin(amount);
    }

    /// @notice Ask `amount` back; it can be withdrawn after the unbonding delay and can still
    /// pay for work anchored meanwhile (the delay is what lets anchors catch up).
    function leavePool(uint256 amount) external {
        Pool storage p = pools[msg.sender];
        if (amount > p.balance) revert PoolShort(msg.sender, p.balance, amount);
        p.balance -= uint128(amount); // amount <= balance, a uint128
        p.leaving = SafeCast.toUint128(p.leaving + amount);
        p.leaveAt = uint64(block.timestamp) + _unbondingDelay();
        emit PoolLeaving(msg.sender, amount, p.leaveAt);
    }

    function withdrawPool() external nonReentrant {
        Pool storage p = pools[msg.sender];
        if (p.leaving == 0) revert NotLeaving();
        if (block.timestamp < p.leaveAt) revert WindowOpen(0, p.leaveAt);
        uint256 amount = p.leaving;
        p.leaving = 0;
        emit PoolWithdrawn(msg.sender, amount);
        _sendCoin(msg.sender, amount);
    }

    // ------------------------------------------------------------ anchors

    /// @notice Post epoch `epochCount`: requester `requesters[i]`'s pool pays `amounts[i]`,
    /// which with all it paid before (`pools[r].debited`) must stay within `spends[i]`, the
    /// cumulative spend that requester signed (`spendSigs[i]`, EIP-712 `Spend`).
    function postAnchor(bytes32 earningsRoot, bytes32 entriesRoot, address[] calldata requesters,
        uint256[] calldata amounts, uint256[] calldata spends, bytes[] calldata spendSigs)
        external returns (uint64 epoch) {
        _bonded();
        if (requesters.length != amounts.length || requesters.length != spends.length
            || requesters.length != spendSigs.length) revert LengthMismatch();
        epoch = epochCount;
        if (epoch > 0) _settlePrevious(epoch - 1);
        uint256 total = 0;
        for (uint256 i = 0; i < requesters.length; i++) {
            _debit(requesters[i], amounts[i], spends[i], spendSigs[i]);
            total += amounts[i];
        }
        _record(epoch, earningsRoot, entriesRoot, keccak256(abi.encode(requesters, amounts)), total);
        emit Anchored(epoch, msg.sender, earningsRoot, entriesRoot, total, requesters, amounts);
    }

    function _record(uint64 epoch, bytes32 earningsRoot, bytes32 entriesRoot, bytes32 debitsHash,
        uint256 total) private {
        uint64 deadline = uint64(block.timestamp) + _disputeWindow();
        pending = Anchor(earningsRoot, entriesRoot, debitsHash, msg.sender, deadline, 0,
            AnchorState.Pending, 0, uint64(block.timestamp), total);
        epochCount = epoch + 1;
    }

    function _settlePrevious(uint64 epoch) private {
        Anchor storage a = pending;
        if (a.state == AnchorState.Pending) {
            if (block.timestamp < _openUntil(a) || a.openDisputes > 0) revert PreviousPending(epoch);
            _finalize(epoch, a);
        }
    }

    function _debit(address requester, uint256 amount, uint256 spend, bytes calldata sig) private {
        Pool storage p = pools[requester];
        uint256 debitedAfter = uint256(p.debited) + amount;
        if (debitedAfter > spend) revert SpendExceeded(requester, debitedAfter, spend);
        address signer = _spendSigner(requester, spend, sig);
        if (signer != requester) revert BadSpendSignature(requester, signer);
        uint256 balance = p.balance;
        if (amount <= balance) {
            (p.balance, p.debited) = (uint128(balance - amount), SafeCast.toUint128(debitedAfter));
            return;
        }
        uint256 rest = amount - balance;
        if (rest > p.leaving) revert PoolShort(requester, balance + p.leaving, amount);
        (p.balance, p.debited) = (0, SafeCast.toUint128(debitedAfter));
        p.leaving -= uint128(rest); // rest <= leaving, a uint128
    }

    /// @notice Make a pending anchor final once its window is over with no open dispute.
    function finalize(uint64 epoch) external {
        Anchor storage a = _pendingAt(epoch);
        uint64 until = _openUntil(a);
        if (block.timestamp < until) revert WindowOpen(epoch, until);
        if (a.openDisputes > 0) revert DisputesOpen(epoch, a.openDisputes);
        _finalize(epoch, a);
    }

    function _finalize(uint64 epoch, Anchor storage a) private {
        a.state = AnchorState.Final;
        claimRoot = a.earningsRoot;
        finalEntries[epoch] = a.entriesRoot;
        anchoredFinal += uint128(a.total - _accrueFee(a.total));
        emit Finalized(epoch, a.earningsRoot);
    }

    /// Until when an entry may be disputed and a fraud shown: the window, or longer once a sum
    /// answer revealed entries (see EpochAudits.sol).
    function _openUntil(Anchor storage a) internal view returns (uint64) {
        return a.graceEnd > a.disputeDeadline ? a.graceEnd : a.disputeDeadline;
    }

    function _pendingAt(uint64 epoch) internal view returns (Anchor storage a) {
        a = _latest(epoch);
        if (a.state != AnchorState.Pending) revert NotPending(epoch);
    }

    /// The pending anchor while entries can be disputed and frauds shown: after that it is
    /// final in all but name, and nodes build on it.
    function _fraudOpen(uint64 epoch) internal view returns (Anchor storage a) {
        a = _pendingAt(epoch);
        uint64 until = _openUntil(a);
        if (block.timestamp >= until) revert WindowClosed(epoch, until);
    }

    /// The caller must have an anchorer's bond staked: to anchor, or to raise what holds an
    /// anchor open (anyone could otherwise delay every epoch).
    function _bonded() internal view {
        uint256 bond = _bondOf(msg.sender);
        if (bond < _anchorBond()) revert NotAnchorer(msg.sender, bond);
    }

    function _latest(uint64 epoch) internal view returns (Anchor storage a) {
        if (epoch + 1 != epochCount) revert NotLatest(epoch, epochCount == 0 ? 0 : epochCount - 1);
        a = pending;
    }

    // ------------------------------------------------------------ disputes

    function entryLeaf(Entry calldata e) internal pure returns (bytes32) {
        return keccak256(bytes.concat(keccak256(abi.encode(e))));
    }

    /// @notice The requester says it never signed `e`; the anchorer has `disputeWindow` to show
    /// the voucher.
    function dispute(uint64 epoch, Entry calldata e, bytes32[] calldata proof) external {
        Anchor storage a = _fraudOpen(epoch);
        if (e.requester != msg.sender) revert NotYourEntry(e.requester, msg.sender);
        bytes32 leaf = entryLeaf(e);
        if (!MerkleProof.verifyCalldata(proof, a.entriesRoot, leaf)) revert NotInTree();
        bytes32 key = keccak256(abi.encode(epoch, leaf));
        if (disputes[key] != 0) revert AlreadyDisputed(leaf);
        uint64 answerBy = uint64(block.timestamp) + _disputeWindow();
        disputes[key] = answerBy;
        a.openDisputes += 1;
        emit Disputed(epoch, leaf, msg.sender, answerBy);
    }

    /// @notice Show the requester's voucher for exactly the disputed amount.
    function answer(uint64 epoch, Entry calldata e, bytes calldata sig) external {
        Anchor storage a = _pendingAt(epoch);
        bytes32 leaf = entryLeaf(e);
        bytes32 key = keccak256(abi.encode(epoch, leaf));
        uint64 answerBy = disputes[key];
        if (answerBy == 0 || answerBy == ANSWERED) revert NoDispute(leaf);
        if (block.timestamp >= answerBy) revert AnswerTimeOver(answerBy);
        address signer = _voucherSigner(e, sig);
        if (signer != e.requester) revert NotYourEntry(e.requester, signer);
        disputes[key] = ANSWERED; // answered stays answered: it cannot be raised again
        a.openDisputes -= 1;
        emit Answered(epoch, leaf);
    }

    /// @notice An unanswered dispute voids the anchor (see `_void`).
    function voidAnchor(uint64 epoch, Entry calldata e, address[] calldata requesters,
        uint256[] calldata amounts) external nonReentrant {
        Anchor storage a = _pendingAt(epoch);
        bytes32 leaf = entryLeaf(e);
        uint64 answerBy = disputes[keccak256(abi.encode(epoch, leaf))];
        if (answerBy == 0 || answerBy == ANSWERED) revert NoDispute(leaf);
        if (block.timestamp < answerBy) revert AnswerTimeNotOver(answerBy);
        _void(epoch, a, leaf, e.requester, requesters, amounts);
    }

    /// Void the pending anchor `a` for the fault `what`: its debits (given again, checked against
    /// the anchor) go back to the pools and count no more against their spends; the anchorer's
    /// bond is slashed, part of it to `catcher`.
    function _void(uint64 epoch, Anchor storage a, bytes32 what, address catcher,
        address[] calldata requesters, uint256[] calldata amounts) internal {
        if (keccak256(abi.encode(requesters, amounts)) != a.debitsHash) revert DebitsMismatch();
        a.state = AnchorState.Void;
        address anchorer = a.anchorer; // read before any transfer: a catcher may call back
        for (uint256 i = 0; i < requesters.length; i++) {
            Pool storage p = pools[requesters[i]];
            uint128 amount = SafeCast.toUint128(amounts[i]); // debited once, so it fits
            (p.balance, p.debited) = (SafeCast.toUint128(uint256(p.balance) + amount), p.debited - amount);
        }
        uint256 slashed = _slashBond(anchorer, catcher);
        emit Voided(epoch, what, anchorer, slashed);
    }

    // ------------------------------------------------------------ claims

    /// @notice Claim the increase of the caller's cumulative (net) earnings in the latest final
    /// root; the fee was taken when the epochs became final.
    function claimEarnings(uint256 cumulative, bytes32[] calldata proof) external nonReentrant {
        if (!MerkleProof.verifyCalldata(proof, claimRoot, _earningsLeaf(msg.sender, cumulative))) {
            revert NotInTree();
        }
        uint256 before = earned[msg.sender];
        if (cumulative <= before) revert NothingToClaimYet(cumulative, before);
        uint256 delta = cumulative - before;
        if (anchoredClaimed + delta > anchoredFinal) revert PoolOverdrawn(anchoredFinal, anchoredClaimed, delta);
        // the check above bounds delta by a uint128, so the cast below cannot truncate
        earned[msg.sender] = cumulative;
        anchoredClaimed += uint128(delta);
        emit EarningsClaimed(msg.sender, cumulative, delta);
        _sendCoin(msg.sender, delta);
    }

    /// @notice Pay many workers at once what `claimEarnings` would pay each: the increase of its
    /// cumulative leaf in the latest final root over what it received before. Anyone may send
    /// it (the anchoring sentry does), so a worker needs no coin for gas to be paid, and one
    /// transaction's overhead and one multiproof serve them all. The leaves come in the order of
    /// OpenZeppelin's `getMultiProof`. A worker with nothing new is skipped, and so is one whose
    /// transfer fails (a contract refusing coin, an address the token blocks), its record left
    /// as it was: one worker cannot stop the others' pay, and can still claim by itself.
    function payout(address[] calldata workers, uint256[] calldata cumulatives,
        bytes32[] calldata proof, bool[] calldata proofFlags) external nonReentrant returns (uint256 paid) {
        uint256 n = workers.length;
        if (n == 0 || cumulatives.length != n) revert LengthMismatch();
        bytes32[] memory leaves = new bytes32[](n);
        for (uint256 i = 0; i < n; i++) leaves[i] = _earningsLeaf(workers[i], cumulatives[i]);
        if (!MerkleProof.multiProofVerifyCalldata(proof, proofFlags, claimRoot, leaves)) revert NotInTree();
        // one read and one write of the shared totals for the whole batch
        uint256 claimedTotal = anchoredClaimed;
        for (uint256 i = 0; i < n; i++) {
            (address worker, uint256 cumulative) = (workers[i], cumulatives[i]);
            uint256 before = earned[worker];
            if (cumulative <= before) continue;
            uint256 delta = cumulative - before;
            if (claimedTotal + delta > anchoredFinal) revert PoolOverdrawn(anchoredFinal, claimedTotal, delta);
            earned[worker] = cumulative; // written before the transfer, put back if it fails
            if (!_trySendCoin(worker, delta)) {
                earned[worker] = before;
                emit PayoutSkipped(worker, delta);
                continue;
            }
            claimedTotal += delta;
            paid += delta;
            emit EarningsClaimed(worker, cumulative, delta);
        }
        anchoredClaimed = uint128(claimedTotal);
    }

    /// keccak256(bytes.concat(keccak256(abi.encode(worker, cumulative)))), hashed in scratch
    /// space: a leaves answer hashes a thousand, and each allocation would stay in memory.
    function _earningsLeaf(address worker, uint256 cumulative) internal pure returns (bytes32 leaf) {
        bytes32 inner = Hashes.efficientKeccak256(bytes32(uint256(uint160(worker))), bytes32(cumulative));
        assembly ("memory-safe") {
            mstore(0x00, inner)
            leaf := keccak256(0x00, 0x20)
        }
    }
}
