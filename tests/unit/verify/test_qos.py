"""QoS: the flag rule's edges, probe sizing, the report on the wire."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consensus.codec import decode, encode
from consensus.errors import Invalid
from consensus.kinds import from_wire, to_wire
from consensus.verify import qos
from consensus.verify.messages import verify_registry
from consensus.verify.qos import (
    CONCLUSIVE_MS,
    MAX_SIZE,
    MIN_SIZE,
    TARGET_MS,
    Answered,
    Busy,
    ProbeRequest,
    QosReport,
    Silent,
    WorkerQos,
    benchmark_problem,
    score_from,
    size_for,
)


def slow(measured_ms: int = 400, size: int = 4096, ok: bool = True) -> Answered:
    """4096 in 400 ms: 344 GFLOPS, score 34."""
    return Answered(size=size, elapsed_ms=measured_ms, latency_ms=3, proof_ok=ok)


def record(*outcomes: qos.Outcome) -> WorkerQos:
    r = WorkerQos()
    for outcome in outcomes:
        r.add(outcome)
    return r


def test_claims_up_to_twice_the_measurement_pass() -> None:
    assert benchmark_problem(20, 10, True) == ""
    assert "claims score 21, measured 10" in benchmark_problem(21, 10, True)
    assert "does not match" in benchmark_problem(1, 1000, False)


def test_scores_and_sizes_agree_with_the_reference_worker() -> None:
    # 1024^3 * 2 = 2.1 GFLOP in 100 ms = 21.5 GFLOPS: score 2 (10 000 GFLOPS scores 1000)
    assert score_from(1024, 100) == 2
    assert score_from(4096, 14) == 982
    assert score_from(256, 10_000) == 1  # never 0
    assert size_for(0) == MIN_SIZE and size_for(10**6) == MAX_SIZE
    assert size_for(1) == 768  # 10 GFLOPS multiply 794 x 794 in 100 ms
    assert size_for(1000) % 64 == 0
    for score in (5, 17, 51, 300, 1000):
        size = size_for(score)
        assert abs(score_from(size, TARGET_MS) - score) <= max(1, score // 10)


@given(st.integers(0, 10**30))
def test_the_integer_cube_root(value: int) -> None:
    root = qos._icbrt(value)
    assert root**3 <= value < (root + 1) ** 3


def test_one_slow_probe_does_not_flag_two_do() -> None:
    assert record(slow()).problem(claimed=100) == ""
    reason = record(slow(), slow()).problem(claimed=100)
    assert reason == benchmark_problem(100, 34, True) and reason
    assert record(slow(), slow()).problem(claimed=68) == ""


def test_short_probes_are_not_conclusive_however_slow_they_look() -> None:
    short = slow(measured_ms=CONCLUSIVE_MS - 1, size=256)
    assert not short.conclusive and slow().conclusive
    assert record(short, short, short).problem(claimed=1000) == ""
    assert record(short, slow(), slow()).problem(claimed=1000) != ""


def test_the_best_of_the_window_counts() -> None:
    fast = slow(measured_ms=20)  # 4096 in 20 ms: score 687
    assert record(slow(), fast, slow()).problem(claimed=100) == ""
    flagged = record(fast, slow(), slow(), slow())  # the fast one left the window
    assert flagged.problem(claimed=100) != "" and flagged.best() == 34


def test_a_wrong_answer_flags_at_once_until_it_leaves_the_window() -> None:
    wrong = record(slow(measured_ms=20, ok=False))
    assert "does not match" in wrong.problem(claimed=1)
    assert wrong.best() == 0  # a wrong answer measures nothing
    for _ in range(qos.WINDOW):
        wrong.add(slow(measured_ms=20))
    assert wrong.problem(claimed=100) == ""


def test_refusing_while_announcing_availability_flags_busy_and_silence_never() -> None:
    dodge = Busy(dodged=True)
    assert "refused 3 probes" in record(dodge, dodge, dodge).problem(claimed=10)
    assert record(dodge, Busy(dodged=False), dodge, dodge).problem(claimed=10) == ""
    assert record(*[Busy(dodged=False)] * 10).problem(claimed=10) == ""
    silent = record(*[Silent("unreachable")] * 10)
    assert silent.problem(claimed=10**6) == ""
    report = silent.report("w", 10**6, 1, bytes(16))
    assert (report.flagged, report.probes, report.answered, report.busy) == (False, 10, 0, 0)


def test_no_claim_no_speed_flag() -> None:
    assert record(slow(), slow(), slow()).problem(claimed=0) == ""


def test_slow_start_sizes_the_next_probe_from_the_best_measured() -> None:
    r = WorkerQos()
    assert r.next_size(claimed=1000) == MIN_SIZE
    r.add(slow(measured_ms=100, size=1024))  # score 2
    assert r.next_size(claimed=1000) == size_for(16)  # 8x the best, not the claim
    assert r.next_size(claimed=5) == size_for(5)
    assert r.next_size(claimed=0) == size_for(16)


def test_the_report_on_the_wire() -> None:
    r = record(Silent(), Busy(dodged=False), slow(), slow())
    report = r.report("12D3KooWworker", 100, expires_ms=10**13, nonce=b"n" * 16)
    assert (report.probes, report.answered, report.busy, report.latency_ms) == (4, 2, 1, 3)
    assert report.flagged and report.measured == 34 and report.claimed == 100
    wire = decode(encode(to_wire(report)))
    assert from_wire(QosReport, wire) == report
    assert verify_registry().get(QosReport.KIND) is QosReport


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"worker": ""}, "qos.worker"),
        ({"worker": "w" * 129}, "qos.worker"),
        ({"measured": -1}, "qos.measured"),
        ({"answered": 5, "busy": 6, "probes": 10}, "qos.probes"),
        ({"probes": 11, "answered": 0}, "qos.probes"),
        ({"flagged": True, "reason": ""}, "qos.reason"),
        ({"flagged": False, "reason": "x"}, "qos.reason"),
        ({"flagged": True, "reason": "x" * 201}, "qos.reason"),
    ],
)
def test_a_bad_report_is_refused_naming_the_field(change: dict, field: str) -> None:
    wire = to_wire(record(slow()).report("w", 1, 10**13, b"n" * 16)) | change
    with pytest.raises(Invalid, match=field):
        from_wire(QosReport, wire)


@pytest.mark.parametrize(
    ("wire", "field"),
    [
        ({"op": "dance", "probe": bytes(16)}, "probe.op"),
        ({"op": "prepare", "probe": bytes(16), "size": MAX_SIZE + 1}, "probe.size"),
        ({"op": "prepare", "probe": bytes(16), "size": 16}, "probe.size"),
        ({"op": "go", "probe": bytes(16), "seed": -1}, "probe.seed"),
        ({"op": "ping", "probe": bytes(8)}, "probe"),
    ],
)
def test_a_bad_probe_request_is_refused(wire: dict, field: str) -> None:
    with pytest.raises(Invalid, match=field):
        from_wire(ProbeRequest, wire, "probe")
