// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {EpochLeaves} from "./EpochLeaves.sol";

/// @title idlegrid settlement: per-job escrow, worker stake, EIP-712 voucher claims, slashing.
/// @notice Money is one asset per deployment, fixed at construction: native coin in wei
/// (`token` = address(0)), or an ERC-20 token in its base units. Every call that brings money in
/// (deposit, fund, stake) names its `amount`: on coin it must equal msg.value, on a token it is
/// pulled with transferFrom (approve it first) and msg.value must be 0. A requester escrows a job's budget; it signs cumulative
/// vouchers per task attempt (job, task, worker, cumulative); a worker claims the increase over
/// what it already claimed, minus the protocol fee. Unspent escrow returns to the requester once
/// the claim window after the job's end or deadline has closed. Stake unbonds after a delay and
/// can be slashed with evidence signed by a quorum of staked sentries.
/// Epoch settlement (Epochs.sol) is the cheap path: requesters fund a pool,
/// a bonded anchorer posts one Merkle root of cumulative per-worker earnings per epoch with
/// per-requester debits, requesters may dispute an entry during a window, and workers claim
/// rarely with a Merkle proof.
contract IdlegridSettlement is EIP712, EpochLeaves {
    using SafeERC20 for IERC20;

    bytes32 public constant VOUCHER_TYPEHASH =
        keccak256("Voucher(bytes32 job,bytes32 task,address worker,uint256 cumulative)");
    /// The requester authorises epoch anchors to take at most `cumulative` from its pool, ever.
    bytes32 internal constant SPEND_TYPEHASH = keccak256("Spend(address requester,uint256 cumulative)");
    bytes32 internal constant SLASH_TYPEHASH =
        keccak256("Slash(address worker,uint256 amount,bytes32 evidence)");
    uint256 internal constant BPS = 10_000;
    address internal constant BURN = address(0xdEaD);
    uint256 internal constant PAYOUT_GAS = 30_000; // per worker paid by `payout` on native coin

    struct Job {
        address requester;
        uint64 deadline;
        uint64 unlockAt; // claims before, withdrawal from this time on
        bool closed; // the requester withdrew the rest: no more claims
        uint256 cap; // most that may ever be deposited for this job
        uint256 deposited;
        uint256 balance; // deposited - paid out
    }

    struct Stake {
        uint256 bonded;
        uint256 unbonding;
        uint64 unbondAt;
    }

    IERC20 public immutable token; // address(0): native coin
    address public immutable treasury;
    uint256 public immutable feeBps;
    uint64 public immutable claimGrace;
    uint64 public immutable unbondingDelay;
    uint256 public immutable sentryMinStake;
    uint256 public immutable slashQuorum;
    uint256 public immutable slashBurnBps;
    uint256 public immutable anchorBond;
    uint64 public immutable disputeWindow;

    mapping(bytes32 => Job) public jobs;
    /// keccak256(job, task, worker) => cumulative amount already claimed (gross, fee included)
    mapping(bytes32 => uint256) public claimed;
    mapping(address => Stake) public stakes;
    mapping(bytes32 => bool) public evidenceUsed;
    uint256 public feesAccrued;

    event Deposited(bytes32 indexed job, address indexed requester, uint256 amount, uint256 balance);
    event JobEnded(bytes32 indexed job, uint64 unlockAt);
    event Withdrawn(bytes32 indexed job, address indexed requester, uint256 amount);
    event Claimed(
        bytes32 indexed job, bytes32 indexed task, address indexed worker, uint256 cumulative,
        uint256 paid, uint256 fee
    );
    event Staked(address indexed who, uint256 amount, uint256 bonded);
    event UnstakeRequested(address indexed who, uint256 amount, uint64 unbondAt);
    event StakeWithdrawn(address indexed who, uint256 amount);
    event Slashed(address indexed worker, bytes32 indexed evidence, uint256 amount, uint256 burned);
    event FeesWithdrawn(address indexed to, uint256 amount);

    error ZeroAmount();
    error BadParameter(string what);
    error NotRequester(bytes32 job, address caller);
    error OverCap(bytes32 job, uint256 cap, uint256 wouldBe);
    error DeadlineInPast(uint64 deadline);
    error UnknownJob(bytes32 job);
    error ClaimWindowClosed(bytes32 job, uint64 unlockAt);
    error StillLocked(bytes32 job, uint64 unlockAt);
    error JobClosed(bytes32 job);
    error BadSignature(address signer, address expected);
    error NothingToClaim(uint256 cumulative, uint256 alreadyClaimed);
    error OverBudget(bytes32 job, uint256 balance, uint256 wanted);
    error InsufficientStake(uint256 bonded, uint256 wanted);
    error NotUnbonded(uint64 unbondAt);
    error EvidenceUsed(bytes32 evidence);
    error BadQuorum(uint256 signers, uint256 quorum);
    error SignersNotSorted(uint256 index);
    error NotSentry(address signer, uint256 bonded);
    error NotTreasury(address caller);
    error TransferFailed(address to, uint256 amount);
    error ValueMismatch(uint256 value, uint256 amount); // coin: msg.value must equal amount
    error CoinNotAccepted(uint256 value); // token deployment: no msg.value

    struct Params {
        address treasury;
        uint256 feeBps;
        uint64 claimGrace;
        uint64 unbondingDelay;
        uint256 sentryMinStake;
        uint256 slashQuorum;
        uint256 slashBurnBps;
        uint256 anchorBond;
        uint64 disputeWindow;
        address token; // address(0): native coin; else an ERC-20 (no fee-on-transfer, no rebasing)
    }

    constructor(Params memory p) EIP712("idlegrid", "1") {
        if (p.treasury == address(0)) revert BadParameter("treasury");
        if (p.feeBps > 1_000) revert BadParameter("feeBps"); // at most 10 %
        if (p.slashQuorum == 0) revert BadParameter("slashQuorum");
        if (p.slashBurnBps > BPS) revert BadParameter("slashBurnBps");
        if (p.sentryMinStake == 0) revert BadParameter("sentryMinStake");
        if (p.anchorBond == 0) revert BadParameter("anchorBond");
        if (p.token != address(0) && p.token.code.length == 0) revert BadParameter("token");
        treasury = p.treasury;
        feeBps = p.feeBps;
        claimGrace = p.claimGrace;
        unbondingDelay = p.unbondingDelay;
        sentryMinStake = p.sentryMinStake;
        slashQuorum = p.slashQuorum;
        slashBurnBps = p.slashBurnBps;
        anchorBond = p.anchorBond;
        disputeWindow = p.disputeWindow;
        token = IERC20(p.token);
    }

    // ---------------------------------------------------------------- escrow

    /// @notice Escrow `amount` for `job`. The first deposit creates the job and fixes its
    /// requester, cap and deadline; later ones top it up to at most the cap.
    function deposit(bytes32 job, uint256 cap, uint64 deadline, uint256 amount) external payable {
        if (amount == 0) revert ZeroAmount();
        Job storage j = jobs[job];
        if (j.requester == address(0)) {
            if (deadline <= block.timestamp) revert DeadlineInPast(deadline);
            j.requester = msg.sender;
            j.cap = cap;
            j.deadline = deadline;
            j.unlockAt = deadline + claimGrace;
        } else {
            if (j.requester != msg.sender) revert NotRequester(job, msg.sender);
            if (j.closed) revert JobClosed(job);
        }
        uint256 wouldBe = j.deposited + amount;
        if (wouldBe > j.cap) revert OverCap(job, j.cap, wouldBe);
        j.deposited = wouldBe;
        j.balance += amount;
        emit Deposited(job, msg.sender, amount, j.balance);
        _receive(amount);
    }

    /// @notice The job is over: workers have `claimGrace` seconds from now to claim.
    function endJob(bytes32 job) external {
        Job storage j = _requesterJob(job);
        uint64 at = uint64(block.timestamp) + claimGrace;
        if (at < j.unlockAt) j.unlockAt = at;
        emit JobEnded(job, j.unlockAt);
    }

    /// @notice Return what is unspent to the requester once the claim window has closed.
    function withdraw(bytes32 job) external nonReentrant {
        Job storage j = _requesterJob(job);
        if (j.closed) revert JobClosed(job);
        if (block.timestamp < j.unlockAt) revert StillLocked(job, j.unlockAt);
        uint256 amount = j.balance;
        j.balance = 0;
        j.closed = true;
        emit Withdrawn(job, msg.sender, amount);
        _send(msg.sender, amount);
    }

    // ---------------------------------------------------------------- vouchers

    /// @notice Pay `worker` what `requester`'s voucher adds over what was already claimed for
    /// this (job, task, worker); anyone may submit it, the money goes to the worker.
    function claim(bytes32 job, bytes32 task, address worker, uint256 cumulative, bytes calldata sig)
        external
        nonReentrant
    {
        Job storage j = jobs[job];
        if (j.requester == address(0)) revert UnknownJob(job);
        if (j.closed) revert JobClosed(job);
        if (block.timestamp >= j.unlockAt) revert ClaimWindowClosed(job, j.unlockAt);
        bytes32 digest = voucherDigest(job, task, worker, cumulative);
        address signer = ECDSA.recover(digest, sig);
        if (signer != j.requester) revert BadSignature(signer, j.requester);
        bytes32 key = keccak256(abi.encode(job, task, worker));
        uint256 before = claimed[key];
        if (cumulative <= before) revert NothingToClaim(cumulative, before);
        uint256 delta = cumulative - before;
        if (delta > j.balance) revert OverBudget(job, j.balance, delta);
        claimed[key] = cumulative;
        j.balance -= delta;
        uint256 fee = (delta * feeBps) / BPS;
        feesAccrued += fee;
        emit Claimed(job, task, worker, cumulative, delta - fee, fee);
        _send(worker, delta - fee);
    }

    function voucherDigest(bytes32 job, bytes32 task, address worker, uint256 cumulative)
        public
        view
        returns (bytes32)
    {
        return _hashTypedDataV4(keccak256(abi.encode(VOUCHER_TYPEHASH, job, task, worker, cumulative)));
    }

    function spendDigest(address requester, uint256 cumulative) public view returns (bytes32) {
        return _hashTypedDataV4(keccak256(abi.encode(SPEND_TYPEHASH, requester, cumulative)));
    }

    function claimedOf(bytes32 job, bytes32 task, address worker) external view returns (uint256) {
        return claimed[keccak256(abi.encode(job, task, worker))];
    }

    function withdrawFees() external nonReentrant {
        if (msg.sender != treasury) revert NotTreasury(msg.sender);
        uint256 amount = feesAccrued;
        feesAccrued = 0;
        emit FeesWithdrawn(treasury, amount);
        _send(treasury, amount);
    }

    // ---------------------------------------------------------------- stake

    function stake(uint256 amount) external payable {
        if (amount == 0) revert ZeroAmount();
        Stake storage s = stakes[msg.sender];
        s.bonded += amount;
        emit Staked(msg.sender, amount, s.bonded);
        _receive(amount);
    }

    /// @notice Start unbonding `amount`; it stays slashable until withdrawn. A new request
    /// restarts the delay for everything unbonding.
    function requestUnstake(uint256 amount) external {
        if (amount == 0) revert ZeroAmount();
        Stake storage s = stakes[msg.sender];
        if (amount > s.bonded) revert InsufficientStake(s.bonded, amount);
        s.bonded -= amount;
        s.unbonding += amount;
        s.unbondAt = uint64(block.timestamp) + unbondingDelay;
        emit UnstakeRequested(msg.sender, amount, s.unbondAt);
    }

    function withdrawStake() external nonReentrant {
        Stake storage s = stakes[msg.sender];
        if (s.unbonding == 0) revert ZeroAmount();
        if (block.timestamp < s.unbondAt) revert NotUnbonded(s.unbondAt);
        uint256 amount = s.unbonding;
        s.unbonding = 0;
        emit StakeWithdrawn(msg.sender, amount);
        _send(msg.sender, amount);
    }

    // ---------------------------------------------------------------- slashing

    function slashDigest(address worker, uint256 amount, bytes32 evidence)
        public
        view
        returns (bytes32)
    {
        return _hashTypedDataV4(keccak256(abi.encode(SLASH_TYPEHASH, worker, amount, evidence)));
    }

    /// @notice Slash `worker` by up to `amount` (bonded first, then unbonding stake) on
    /// `evidence` signed by at least `slashQuorum` distinct sentries, each with at least
    /// `sentryMinStake` bonded, signatures ordered by strictly increasing signer address.
    /// `slashBurnBps` of the slashed amount is burned; the rest is split among the signers.
    function slash(address worker, uint256 amount, bytes32 evidence, bytes[] calldata sigs)
        external
        nonReentrant
    {
        if (amount == 0) revert ZeroAmount();
        if (evidenceUsed[evidence]) revert EvidenceUsed(evidence);
        if (sigs.length < slashQuorum) revert BadQuorum(sigs.length, slashQuorum);
        address[] memory signers = _sentries(slashDigest(worker, amount, evidence), sigs);
        evidenceUsed[evidence] = true;
        uint256 taken = _take(stakes[worker], amount);
        if (taken == 0) revert InsufficientStake(0, amount);
        uint256 share = (taken - (taken * slashBurnBps) / BPS) / signers.length;
        uint256 burned = taken - share * signers.length;
        emit Slashed(worker, evidence, taken, burned);
        _send(BURN, burned);
        for (uint256 i = 0; i < signers.length; i++) {
            _send(signers[i], share);
        }
    }

    function _sentries(bytes32 digest, bytes[] calldata sigs) private view returns (address[] memory) {
        address[] memory signers = new address[](sigs.length);
        address last = address(0);
        for (uint256 i = 0; i < sigs.length; i++) {
            address signer = ECDSA.recover(digest, sigs[i]);
            if (signer <= last) revert SignersNotSorted(i);
            uint256 bonded = stakes[signer].bonded;
            if (bonded < sentryMinStake) revert NotSentry(signer, bonded);
            signers[i] = signer;
            last = signer;
        }
        return signers;
    }

    function _take(Stake storage s, uint256 amount) private returns (uint256 taken) {
        uint256 fromBonded = amount < s.bonded ? amount : s.bonded;
        s.bonded -= fromBonded;
        uint256 rest = amount - fromBonded;
        uint256 fromUnbonding = rest < s.unbonding ? rest : s.unbonding;
        s.unbonding -= fromUnbonding;
        taken = fromBonded + fromUnbonding;
    }

    // ---------------------------------------------------------------- epoch hooks

    function _bondOf(address who) internal view override returns (uint256) {
        return stakes[who].bonded;
    }

    /// Half of the bond to whoever caught the bad anchor, the rest burned; all of it burned if
    /// the catcher refuses the transfer (a contract, a blocked address): a void must not fail.
    /// The burn comes after the reward's transfer on purpose: a transfer short of gas leaves
    /// the void under 1/64 of it (EIP-150), too little for the burn, so whoever sends the void
    /// cannot pick a gas limit that starves the catcher (tests/chain/test_void_reward.py).
    function _slashBond(address anchorer, address disputer) internal override returns (uint256 taken) {
        taken = _take(stakes[anchorer], anchorBond);
        uint256 reward = taken / 2;
        bool paid = _trySendCoin(disputer, reward);
        _send(BURN, paid ? taken - reward : taken);
    }

    function _accrueFee(uint256 total) internal override returns (uint256 fee) {
        fee = (total * feeBps) / BPS;
        feesAccrued += fee;
    }

    /// The epoch's fee is floor(total * feeBps / BPS), split in proportion to each worker's
    /// gross, so a worker's share is never below its gross less its own fee rounded up, nor
    /// above its gross less its own fee rounded down, plus one wei of the remainder.
    function _netFloor(uint256 gross) internal view override returns (uint256) {
        return gross - (gross * feeBps + BPS - 1) / BPS;
    }

    function _netCeil(uint256 gross) internal view override returns (uint256) {
        uint256 most = gross - (gross * feeBps) / BPS + 1;
        return gross < most ? gross : most;
    }

    function _voucherSigner(Entry calldata e, bytes calldata sig) internal view override returns (address) {
        return ECDSA.recover(voucherDigest(e.job, e.task, e.worker, e.amount), sig);
    }

    function _spendSigner(address requester, uint256 cumulative, bytes calldata sig)
        internal view override returns (address signer)
    {
        (signer,,) = ECDSA.tryRecover(spendDigest(requester, cumulative), sig);
    }

    function _unbondingDelay() internal view override returns (uint64) {
        return unbondingDelay;
    }

    function _anchorBond() internal view override returns (uint256) {
        return anchorBond;
    }

    function _disputeWindow() internal view override returns (uint64) {
        return disputeWindow;
    }

    function _sendCoin(address to, uint256 amount) internal override {
        _send(to, amount);
    }

    function _trySendCoin(address to, uint256 amount) internal override returns (bool ok) {
        if (address(token) != address(0)) return token.trySafeTransfer(to, amount);
        // Bounded gas and no return data copied: a receiver can neither burn the batch's gas
        // nor bloat its memory (a "return bomb"); a smart wallet's receive fits in this.
        assembly ("memory-safe") {
            ok := call(PAYOUT_GAS, to, amount, 0, 0, 0, 0)
        }
    }

    function _receiveCoin(uint256 amount) internal override {
        _receive(amount);
    }

    // ---------------------------------------------------------------- helpers

    function _requesterJob(bytes32 job) private view returns (Job storage j) {
        j = jobs[job];
        if (j.requester == address(0)) revert UnknownJob(job);
        if (j.requester != msg.sender) revert NotRequester(job, msg.sender);
    }

    /// Take `amount` in: checked against msg.value on coin, pulled from the caller on a token.
    /// Called last, once the books are written: a token that calls back into this contract
    /// finds them consistent, and if the pull fails the whole call reverts. So no reentrancy
    /// guard here (it would cost every native deposit too).
    function _receive(uint256 amount) private {
        if (address(token) == address(0)) {
            if (msg.value != amount) revert ValueMismatch(msg.value, amount);
        } else {
            if (msg.value != 0) revert CoinNotAccepted(msg.value);
            if (amount != 0) token.safeTransferFrom(msg.sender, address(this), amount);
        }
    }

    function _send(address to, uint256 amount) private {
        if (amount == 0) return;
        if (address(token) != address(0)) {
            token.safeTransfer(to, amount);
            return;
        }
        (bool ok,) = to.call{value: amount}("");
        if (!ok) revert TransferFailed(to, amount);
    }
}
