"""Memory and CPU of decoding one LIST page: whole (`json.loads`) against `listing.StreamedList`.

An in-process experiment, not part of `make bench` (which never imports the reconciler): 1,000
copies of a Deployment recorded from the real apiserver (tests/data/plan/live/), shaped as the
apiserver sends a list (compact JSON, items without kind/apiVersion), read in 1 MiB chunks.

    .venv/bin/python bench/experiments/list_decode.py
"""

from __future__ import annotations

import copy
import gc
import json
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from reconciler.listing import StreamedList  # noqa: E402


def page(n: int = 1000) -> bytes:
    base = json.loads(sorted((ROOT / "tests" / "data" / "plan" / "live").glob("Deployment-*.json"))[0].read_text())
    items = []
    for i in range(n):
        o = copy.deepcopy(base)
        o["metadata"]["name"] = f"w{i}"
        items.append({"metadata": o["metadata"], "spec": o.get("spec"), "status": o.get("status", {})})
    return json.dumps({"kind": "DeploymentList", "metadata": {}, "items": items}, separators=(",", ":")).encode()


def kept_mb(fn: Any) -> tuple[float, float]:
    gc.collect()
    tracemalloc.start()
    kept = fn()
    gc.collect()
    current, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    del kept
    return current / 1e6, peak / 1e6


def main() -> None:
    body = page()
    chunks = [body[i:i + (1 << 20)] for i in range(0, len(body), 1 << 20)]
    print(f"one page of 1,000 Deployments: {len(body) / 1e6:.1f} MB of JSON")
    whole = kept_mb(lambda: json.loads(body)["items"])
    streamed = kept_mb(lambda: list(StreamedList(chunks).items()))
    print(f"json.loads of the page: kept {whole[0]:.1f} MB, peak {whole[1]:.1f} MB")
    print(f"StreamedList:          kept {streamed[0]:.1f} MB, peak {streamed[1]:.1f} MB")
    for _ in range(3):
        t = time.process_time()
        json.loads(body)
        a = time.process_time() - t
        t = time.process_time()
        list(StreamedList(chunks).items())
        b = time.process_time() - t
        print(f"CPU s: json.loads {a:.3f}, StreamedList {b:.3f}")


if __name__ == "__main__":
    main()
