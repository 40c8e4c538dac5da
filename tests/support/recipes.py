"""Recipes as a run renders them, and what they ask for (tests of the worker and end to end)."""

from __future__ import annotations


def recipe(name: str, layout: str | None = None, target: float | None = None) -> str:
    """A preset as a run renders it: 'yolov5s-pruned', or ('yolov5n-transfer-pruned', 'v7.0')."""
    from sparsify_worker.recipes import render, split_preset

    arch, kind = split_preset(name)
    return render(arch, kind, layout, target)


def weighted_target(text: str, arch: str = "yolov5s", layout: str = "v5.0") -> float:
    """The sparsity a pruning recipe asks for over the prunable weights, weighted by size."""
    from sparsify_worker.model import build_model
    from sparsify_worker.recipes import parse_recipe_yaml, variables

    sizes = {n: p.numel() for n, p in build_model(arch, 3, "SiLU", layout).named_parameters()}
    v = variables(text)
    total = pruned = 0.0
    for mod in parse_recipe_yaml(text)["pruning_modifiers"]:
        group = mod["final_sparsity"].removeprefix("eval(").removesuffix(")")
        for p in mod["params"]:
            total += sizes[p]
            pruned += sizes[p] * float(v[group])
    n_prunable = sum(
        c
        for n, c in sizes.items()
        if n.endswith("weight")
        and len(n.split(".")) > 2
        and not n.startswith("model.0.")
        and n in {p for m in parse_recipe_yaml(text)["pruning_modifiers"] for p in m["params"]}
    )
    assert n_prunable == total
    return pruned / total
