"""Getting a dataset onto the node: a node-level cache checked against the bucket's listing,
and the sample of images and labels validate reads."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from .s3 import Store

log = logging.getLogger("sparsify_worker")


def dataset_manifest(objects: list) -> str:
    return json.dumps([[o.key, size, etag] for o, size, etag in objects], separators=(",", ":"))


def cached_dataset(store: Store, uri: str, cache: Path) -> Path:
    """The dataset under `cache`, keyed by its URI and checked against its listing: reused when
    the listing is what the copy was made from, fetched again (whole, atomically) otherwise.
    One process per node fetches; the others wait on the lock."""
    import fcntl
    import hashlib
    import shutil

    key = hashlib.sha256(uri.encode()).hexdigest()[:16]
    root, manifest_file = cache / key, cache / f"{key}.manifest.json"
    cache.mkdir(parents=True, exist_ok=True)
    objects = store.list_detailed(uri)
    manifest = dataset_manifest(objects)
    with open(cache / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if root.is_dir() and manifest_file.exists() and manifest_file.read_text() == manifest:
            log.info("dataset %s: reusing the node's copy (%d objects, listing unchanged)", uri, len(objects))
            return root
        tmp = cache / f".{key}.partial"
        shutil.rmtree(tmp, ignore_errors=True)
        store.download_tree(uri, tmp, objects)
        shutil.rmtree(root, ignore_errors=True)
        os.replace(tmp, root)
        manifest_file.write_text(manifest)
        log.info("dataset %s: fetched %d objects into the node's cache", uri, len(objects))
    return root


def sample_pairs(keys: list[str], per_split: int = 16, labels: int = 2000) -> list[str]:
    """The first images of each split with their labels, plus a deterministic sample of all
    labels (class ids and coordinates are checked on those; validate says how many)."""
    import random

    chosen = []
    keyset = set(keys)
    images = [k for k in keys if "/images/" in f"/{k}" or k.startswith("images/")]
    by_split: dict[str, list[str]] = {}
    for k in images:
        by_split.setdefault(str(Path(k).parent), []).append(k)
    for ks in by_split.values():
        for k in sorted(ks)[:per_split]:
            chosen.append(k)
            label = str(Path(k.replace("images/", "labels/", 1)).with_suffix(".txt"))
            if label in keyset:
                chosen.append(label)
    all_labels = sorted(k for k in keys if k.endswith(".txt") and ("/labels/" in f"/{k}") and k not in chosen)
    chosen += random.Random(0).sample(all_labels, min(labels, len(all_labels)))
    return chosen
