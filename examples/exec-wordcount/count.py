"""Counts words in this shard's share of text/*.txt and writes out/counts-<shard>.json."""

import collections
import json
import os
import pathlib

shard, shards = int(os.environ["IDLEGRID_SHARD"]), int(os.environ["IDLEGRID_SHARDS"])
files = sorted(pathlib.Path("text").glob("*.txt"))[shard::shards]
counts = collections.Counter()
for path in files:
    counts.update(path.read_text().lower().split())
    print(f"counted {path.name}")
out = pathlib.Path("out")
out.mkdir(exist_ok=True)
(out / f"counts-{shard}.json").write_text(json.dumps(dict(counts.most_common(20)), indent=1))
print(f"shard {shard}: {sum(counts.values())} words in {len(files)} files")
