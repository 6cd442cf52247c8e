"""A job that names a dataset, on real daemons: the requester adds a folder once, the worker
fetches it through the transfer layer and writes it out once, read-only, for the task's folder
to link to; a sentry that replays the task gets it from the worker (and deletes its copy once
unused for its short expiry), and a second job on the same data neither moves a chunk nor
writes a file of it again.

Three daemons on 127.0.0.1 (requester, sentry, worker). Synchronised on what the daemons log
and on CLI exits, never on sleeps.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.daemons import Daemon, idlegrid, peer_id
from tests.integration.test_market_daemons import field
from tests.integration.test_transfer import make_tree
from tests.integration.test_verify_daemons import ENV, wait_all

pytestmark = pytest.mark.slow

JOB = """
name = "digest"
kind = "exec"
verification = "standard"

[runtime]
command = ["python3", "work.py"]
estimate_s = 2

[io]
inputs = ["work.py"]
outputs = ["out/"]
datasets = {{ corpus = "{dataset}" }}

[budget]
max_total = "0.001 eth"
max_price_per_s = "250 gwei"
deadline = "5m"
"""
WORK = """
import hashlib, pathlib
digest = hashlib.sha256()
for path in sorted(pathlib.Path("corpus").rglob("*")):
    if path.is_file():
        digest.update(path.relative_to("corpus").as_posix().encode() + path.read_bytes())
pathlib.Path("out").mkdir(exist_ok=True)
pathlib.Path("out/digest.txt").write_text(digest.hexdigest() + "\\n")
try:
    open(next(p for p in sorted(pathlib.Path("corpus").rglob("*")) if p.is_file()), "r+b")
    pathlib.Path("out/dataset.txt").write_text("writable")
except OSError:
    pathlib.Path("out/dataset.txt").write_text("read-only")
"""


def digest_of(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        if path.is_file():
            digest.update(path.relative_to(root).as_posix().encode() + path.read_bytes())
    return digest.hexdigest() + "\n"


def corpus_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


@pytest.fixture
def network(tmp_path: Path) -> Iterator[dict[str, Daemon]]:
    daemons: dict[str, Daemon] = {}
    try:
        assert idlegrid(tmp_path / "requester", "init", env=ENV).returncode == 0
        daemons["requester"] = Daemon(tmp_path / "requester", (), ENV).wait_started()
        status = json.loads(idlegrid(tmp_path / "requester", "status", "--json", env=ENV).stdout)
        boot = ("--bootstrap", str(status["p2p"]["addrs"][0]))
        for name in ("sentry", "worker"):
            env = ENV | {"IDLEGRID_WORKER_PRICE_WEI_PER_S": str(100 * 10**9)}  # under the cap
            if name == "sentry":  # its copy of a replayed task's data goes 1 s after the replay
                env |= {"IDLEGRID_NODE_TASK_DATA_EXPIRE_S": "1"}
            assert idlegrid(tmp_path / name, "init", "--role", name, env=env).returncode == 0
            daemons[name] = Daemon(tmp_path / name, boot, env).wait_started()
        yield daemons
    finally:
        for daemon in daemons.values():
            daemon.kill()


def submit(requester: Daemon, spec_dir: Path, dataset: str) -> tuple[int, str, str]:
    (spec_dir / "job.toml").write_text(JOB.format(dataset=dataset))
    done = idlegrid(requester.home, "job", "submit", str(spec_dir / "job.toml"), "--json", env=ENV)
    return done.returncode, done.stdout, done.stderr


def test_a_job_runs_and_is_verified_on_a_dataset_fetched_once(
    network: dict[str, Daemon], tmp_path: Path
) -> None:
    requester, sentry, worker = network["requester"], network["sentry"], network["worker"]
    ids = {name: peer_id(d.home) for name, d in network.items()}
    wait_all(requester, [("worker status", ids["worker"], "new=available"),
                         ("peer discovered", ids["sentry"])])  # fmt: skip
    corpus = tmp_path / "corpus"
    make_tree(corpus, big_files=2, small_files=20)
    added = idlegrid(requester.home, "data", "add", str(corpus), "--json", env=ENV)
    assert added.returncode == 0, added.stderr
    dataset = json.loads(added.stdout)["dataset_id"]
    spec_dir = tmp_path / "job"
    spec_dir.mkdir()
    (spec_dir / "work.py").write_text(WORK)

    code, _, err = submit(requester, spec_dir, "ab" * 32)
    assert code == 2 and "io.datasets.corpus" in err and "not held whole here" in err, err
    unknown = idlegrid(requester.home, "job", "status", "00ff", env=ENV)
    assert unknown.returncode == 2 and "no job matches '00ff'" in unknown.stderr, unknown.stderr

    code, out, err = submit(requester, spec_dir, dataset)
    assert code == 0, err
    job_id = json.loads(out)["job_id"]
    placed = worker.wait_for("dataset placed", timeout=90)
    assert field(placed, "dataset") == dataset[:16] and int(field(placed, "chunks_moved")) > 0
    replayed_on = sentry.wait_for("dataset placed", timeout=90)  # from the worker
    assert field(replayed_on, "dataset") == dataset[:16]
    passed = sentry.wait_for("verdict", timeout=90)
    assert f"worker={ids['worker']}" in passed and "passed=True" in passed, passed
    sentry.wait_count("dataset expired", 1, timeout=30)
    [expired] = [line for line in sentry.lines if "dataset expired" in line]
    assert field(expired, "dataset") == dataset[:16]
    wait_all(requester, [("task moved", "job_state=verified")], timeout=90)
    shown = idlegrid(requester.home, "job", "status", job_id, env=ENV).stdout
    assert f"datasets: corpus {dataset[:16]}" in shown, shown
    fetched = tmp_path / "fetched"
    got = idlegrid(requester.home, "job", "fetch", job_id, "--out", str(fetched), env=ENV)
    assert got.returncode == 0, got.stderr
    assert (fetched / "out" / "digest.txt").read_text() == digest_of(corpus)
    assert (fetched / "out" / "dataset.txt").read_text() == "read-only"
    tree = worker.home / "trees" / dataset
    assert digest_of(tree) == digest_of(corpus)
    assert not any((sentry.home / "trees").iterdir()), "the sentry's copy expired with it"

    code, out, err = submit(requester, spec_dir, dataset)  # the same data again
    assert code == 0, err
    wait_all(requester, [("task moved", "job_state=verified")], timeout=90)
    assert worker.output().count("dataset placed") == 1, "linked to the copy written before"
    gone = idlegrid(worker.home, "data", "rm", dataset, "--json", env=ENV)  # the operator's disk
    assert gone.returncode == 0, gone.stderr
    removed = json.loads(gone.stdout)
    assert removed["chunks_deleted"] > 0 and removed["bytes_freed"] > corpus_bytes(corpus)
    assert field(worker.wait_for("dataset removed"), "dataset") == dataset[:16]
    assert not tree.exists()
    for daemon in network.values():
        assert "Traceback" not in daemon.output()
