"""What every stage reads: the spec the operator gives it (trusted: defaults are the
operator's, filled in before the pod starts), the run's identity and output location, S3."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from .model import ModelSpec
from .s3 import S3Uri, Store
from .staging import cached_dataset


def read_json(name: str, default=None):
    """A stage's input: the file $NAME_FILE names (in a pod: its own annotation, mounted by the
    operator) or, for local runs, the JSON in $NAME itself."""
    path = os.environ.get(f"{name}_FILE")
    if path:
        return json.loads(Path(path).read_text() or "null") or default
    if name in os.environ:
        return json.loads(os.environ[name])
    if default is not None:
        return default
    raise KeyError(f"neither {name}_FILE nor {name} is set")


class StageContext:
    """What a stage is given: the spec and the earlier stages' summaries (files the operator
    mounts), the run's output location and identity (variables), and a scratch directory."""

    def __init__(self, name: str):
        self.name = name
        self.spec = read_json("SPARSIFY_SPEC")
        self.inputs = read_json("SPARSIFY_INPUTS", {})
        self.out = S3Uri.parse(os.environ["SPARSIFY_OUTPUT_URI"])
        self.recipe = os.environ.get("SPARSIFY_RECIPE", "custom")  # the preset's full name, as the operator says it
        self.run_uid = os.environ.get("SPARSIFY_UID", "")
        self.run_name = os.environ.get("SPARSIFY_NAME", "")
        self.work = Path(os.environ.get("SPARSIFY_WORKDIR") or tempfile.gettempdir()) / "sparsify"
        self.work.mkdir(parents=True, exist_ok=True)
        self._store: Store | None = None

    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = Store()
        return self._store

    def recipe_text(self, model: ModelSpec) -> str:
        """The spec's recipe; a preset is rendered for the resolved model (its layout)."""
        from .recipes import render

        r = self.spec["recipe"]
        if r.get("preset"):
            return render(model.arch, r["preset"], model.layout, r.get("targetSparsity"))
        if r.get("inline"):
            return r["inline"]
        return self.store.download(r["uri"], self.work / "recipe.yaml").read_text()

    def recipe_variables(self, text: str) -> dict:
        """The epochs override (the schedule rescaled), then the spec's own variable overrides."""
        from .recipes import rescaled_variables

        epochs = self.spec["training"].get("epochs")
        out = rescaled_variables(text, int(epochs)) if epochs else {}
        return {**out, **{k: float(v) for k, v in (self.spec["recipe"].get("variables") or {}).items()}}

    def weights_path(self) -> Path | None:
        """The spec's starting weights, downloaded once per process."""
        uri = self.spec["model"].get("weights")
        if not uri:
            return None
        path = self.work / f"weights-{os.environ.get('RANK', '0')}" / "weights.pt"
        return path if path.exists() else self.store.download(uri, path)

    def stage_dataset(self) -> Path:
        """Each node's first process downloads (in parallel); the others wait for its marker.
        With a node-level cache (SPARSIFY_DATASET_CACHE, a hostPath the platform mounts), a
        dataset whose listing (keys, sizes, ETags) matches the cached copy's is not fetched
        again: not by the next attempt, not by another run on the node."""
        import time

        uri = self.spec["dataset"]["uri"]
        cache = os.environ.get("SPARSIFY_DATASET_CACHE")
        if cache:
            return cached_dataset(self.store, uri, Path(cache))
        root = self.work / "dataset"
        marker = root / ".complete"
        if marker.exists():
            return root
        if int(os.environ.get("LOCAL_RANK", "0")) == 0:
            self.store.download_tree(uri, root)
            marker.touch()
        else:
            while not marker.exists():
                time.sleep(1)
        return root
