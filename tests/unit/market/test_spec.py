"""Job specs: every example parses, and every bad field is named with its reason."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest

from consensus.errors import Invalid
from consensus.kinds import from_wire, to_wire
from consensus.market.messages import Demand, Workload
from consensus.market.spec import SpecError, frame_range, parse_amount, parse_spec
from node.market.tasks import workload_for
from tests.unit.market.factories import demand

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


def base(**changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "kind": "exec",
        "runtime": {"command": ["python3", "run.py"]},
        "budget": {"max_total": "0.001 eth", "max_price_per_s": "1 gwei"},
    }
    for key, value in changes.items():
        table, _, field = key.partition("__")
        if field:
            doc.setdefault(table, {})[field] = value
        else:
            doc[table] = value
    return doc


def test_a_minimal_exec_spec_gets_defaults() -> None:
    spec = parse_spec(base())
    assert spec.tasks == 1 and spec.split == "none" and spec.verification == "standard"
    assert spec.max_total_wei == 10**15 and spec.max_price_wei_per_s == 10**9
    assert spec.deadline_s == 3600 and spec.requirements.gpu_count == 1
    assert spec.network is False


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*/job.toml")), ids=lambda p: p.parent.name)
def test_every_example_parses(path: Path) -> None:
    parse_spec(tomllib.loads(path.read_text()))


@pytest.mark.parametrize(
    ("changes", "key", "reason"),
    [
        ({"kind": "mine"}, "kind", "expected one of train, render, exec"),
        ({"colour": "red"}, "colour", "unknown key"),
        ({"requirements__vram": 4}, "requirements.vram", "unknown key"),
        ({"requirements__vram_mb": -1}, "requirements.vram_mb", "expected an integer"),
        ({"requirements__gpu_count": True}, "requirements.gpu_count", "expected an integer"),
        ({"budget__max_total": 1.5}, "budget.max_total", "expected wei"),
        ({"budget__max_total": "1.5 btc"}, "budget.max_total", "expected wei"),
        ({"budget__max_price_per_s": "0.5 wei"}, "budget.max_price_per_s", "whole number of wei"),
        ({"budget__deadline": "soon"}, "budget.deadline", "expected seconds"),
        ({"budget__deadline": 0}, "budget.deadline", "expected seconds"),
        ({"tasks": 4}, "split", "needs a split"),
        ({"runtime__command": "ls"}, "runtime.command", "list of strings"),
        ({"runtime__command": []}, "runtime.command", "needs a command"),
        ({"io__inputs": ["../etc"]}, "io.inputs", "inside the job folder"),
        ({"io__inputs": ["/etc/passwd"]}, "io.inputs", "inside the job folder"),
        ({"runtime__params": {"lr": 0.1}}, "runtime.params.lr", "string or integer"),
        ({"network": "yes"}, "network", "true or false"),
        ({"requirements": 3}, "requirements", "expected a table"),
        ({"io__datasets": ["ab" * 32]}, "io.datasets", "expected a table like"),
        ({"io__datasets": {".hidden": "ab" * 32}}, "io.datasets..hidden", "not hidden, no /"),
        ({"io__datasets": {"a/b": "ab" * 32}}, "io.datasets.a/b", "not hidden, no /"),
        ({"io__datasets": {"data": "ab" * 31}}, "io.datasets.data", "64 hex"),
        ({"io__datasets": {f"d{i}": "ab" * 32 for i in range(9)}}, "io.datasets", "at most 8"),
        (
            {"io__inputs": ["data/"], "io__datasets": {"data": "ab" * 32}},
            "io.datasets.data",
            "an input has that name too",
        ),
        (  # packed as data/config.json: inside the dataset's folder
            {"io__inputs": ["data/config.json"], "io__datasets": {"data": "ab" * 32}},
            "io.datasets.data",
            "an input has that name too",
        ),
    ],
)
def test_a_bad_field_is_named_with_its_reason(
    changes: dict[str, Any], key: str, reason: str
) -> None:
    with pytest.raises(SpecError) as caught:
        parse_spec(base(**changes))
    assert caught.value.key == key
    assert reason in caught.value.reason


def test_a_missing_budget_is_named() -> None:
    doc = base()
    del doc["budget"]["max_total"]
    with pytest.raises(SpecError, match=r"budget\.max_total: missing"):
        parse_spec(doc)


def test_kind_specific_runtime_checks() -> None:
    with pytest.raises(SpecError, match=r"runtime\.entry"):
        parse_spec(base(kind="train", runtime={"entry": "x.sh", "steps": 4, "segments": 2}))
    with pytest.raises(SpecError, match=r"runtime\.steps"):
        parse_spec(base(kind="train", runtime={"entry": "t.py", "steps": 1, "segments": 2}))
    with pytest.raises(SpecError, match="tasks"):
        parse_spec(base(kind="render", tasks=5, split="frames",
                        runtime={"entry": "s.blend", "frames": "1-4"}))  # fmt: skip
    spec = parse_spec(base(kind="render", tasks=4, split="frames",
                           runtime={"entry": "s.blend", "frames": "1-4"}))  # fmt: skip
    assert spec.task_budget_wei() == 10**15 // 4


@pytest.mark.parametrize(
    ("text", "wei"),
    [(0, 0), (7, 7), ("7 wei", 7), ("1 gwei", 10**9), ("1.5 gwei", 1_500_000_000),
     ("0.000000000000000001 eth", 1), ("2 ETH", 2 * 10**18),
     ("1.50000000000000000000 eth", 15 * 10**17)],
)  # fmt: skip
def test_amounts_convert_exactly(text: Any, wei: int) -> None:
    assert parse_amount(text, "k") == wei


def test_amounts_refuse_fractions_of_a_wei_and_negatives() -> None:
    for bad in ("0.0000000000000000001 eth", -1, "1e18", "", "1.2.3 eth"):
        with pytest.raises(SpecError):
            parse_amount(bad, "k")


def test_frame_ranges() -> None:
    assert frame_range("1-16") == (1, 16)
    assert frame_range("7") == (7, 7)
    with pytest.raises(SpecError):
        frame_range("9-2")


def test_datasets_are_named_folders_of_the_task() -> None:
    spec = parse_spec(base(io__inputs=["run.py"], io__datasets={"images": "AB" * 32}))
    assert spec.datasets == {"images": "ab" * 32}
    assert workload_for(spec, 0).datasets == {"images": bytes.fromhex("ab" * 32)}


def test_a_workload_from_the_wire_with_a_bad_dataset_is_refused() -> None:
    wire = to_wire(Workload(kind="exec", command=["true"]))
    with pytest.raises(Invalid, match=r"workload\.datasets\.\.\.: a plain name"):
        from_wire(Workload, wire | {"datasets": {"..": b"x" * 32}})
    with pytest.raises(Invalid, match=r"workload\.datasets\.data: a plain name"):
        from_wire(Workload, wire | {"datasets": {"data": b"short"}})


def test_a_demand_from_the_wire_with_bad_data_sizes_is_refused() -> None:
    wire = to_wire(demand())
    assert from_wire(Demand, wire | {"datasets": {"ab" * 32: 5}}).data_bytes() == 5
    with pytest.raises(Invalid, match=r"demand\.datasets\.AB.*a 64-hex id"):
        from_wire(Demand, wire | {"datasets": {"AB" * 32: 5}})
    with pytest.raises(Invalid, match=r"a 64-hex id and a size >= 0"):
        from_wire(Demand, wire | {"datasets": {"ab" * 32: -1}})
    with pytest.raises(Invalid, match=r"demand\.datasets: at most 8"):
        from_wire(Demand, wire | {"datasets": {f"{i:064x}": 1 for i in range(9)}})
    with pytest.raises(Invalid, match=r"demand\.inputs_bytes"):
        from_wire(Demand, wire | {"inputs_bytes": -1})
    old_peer = {k: v for k, v in wire.items() if k not in ("datasets", "inputs_bytes")}
    assert from_wire(Demand, old_peer).data_bytes() == 0
