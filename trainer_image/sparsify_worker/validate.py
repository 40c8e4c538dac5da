"""The cheap CPU check before GPUs are held: the starting weights are what the spec says, the
recipe parses and fits the model, and the dataset is reachable and well-formed. All problems
are reported at once, each actionable."""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

from .data import load_data_yaml
from .model import ModelSpec
from .recipes import RecipeError, parse_recipe_yaml, recipe_params, recipe_target_arch, rescaled_variables, variables
from .weights import WeightsError, load_into, read_weights, resolve

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
SAMPLE_IMAGES = 32


class ValidationError(ValueError):
    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("; ".join(problems))


def check_recipe(text: str, model: ModelSpec, declared_arch: str | None, epochs: int | None = None) -> list[str]:
    problems: list[str] = []
    try:
        doc = parse_recipe_yaml(text)
    except RecipeError as e:
        return [str(e)]
    arch = model.arch
    target = declared_arch or recipe_target_arch(text)
    if target and target != arch:
        problems.append(
            f"the recipe is written for {target} but the model is {arch}; recipes are not interchangeable "
            f"between model versions (use the {arch} preset or a recipe written for {arch})"
        )
    layout = doc.get("target_layout")
    if layout and str(layout) != model.layout:
        problems.append(
            f"the recipe is written for the {layout} layout but the model is {model.describe()}; "
            "its layer names do not match (use a preset, which is rendered for the model's layout)"
        )
    if epochs:
        try:
            rescaled_variables(text, epochs)
        except RecipeError as e:
            problems.append(f"training.epochs is set but {e}: add a num_epochs variable to the recipe or leave training.epochs unset")
    try:
        from sparseml.pytorch.optim import ScheduledModifierManager

        from . import shims

        shims.apply()
        ScheduledModifierManager.from_yaml(text)
    except Exception as e:  # noqa: BLE001  (sparseml raises many kinds)
        problems.append(f"SparseML cannot load the recipe: {type(e).__name__}: {str(e)[:300]}")
        return problems
    from .model import build

    names = {n for n, _ in build(model).named_parameters()}
    missing = [p for p in recipe_params(text) if p not in names and not p.startswith("re:") and p not in ("__ALL__", "__ALL_PRUNABLE__")]
    if missing:
        problems.append(
            f"{len(missing)} parameter(s) named by the recipe do not exist in {arch} ({model.layout} layout): "
            f"{', '.join(missing[:5])}" + (" ..." if len(missing) > 5 else "")
        )
    return problems


def labels_dir_for(images_dir: Path) -> Path:
    """YOLO's convention: .../images/<split> -> .../labels/<split> (the last `images` part)."""
    parts = list(images_dir.parts)
    if "images" not in parts:
        return images_dir
    i = len(parts) - 1 - parts[::-1].index("images")
    parts[i] = "labels"
    return Path(*parts)


def _images(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)


def check_dataset(root: Path) -> tuple[list[str], dict]:
    """Structure, classes and a sample of images of a YOLO dataset staged at `root`."""
    from PIL import Image

    try:
        data = load_data_yaml(root)
    except (FileNotFoundError, ValueError) as e:
        return [f"dataset: {e}"], {}
    problems: list[str] = []
    stats = {"nc": data["nc"], "names": data["names"]}
    for split in ("train", "val"):
        images_dir = Path(data[split])
        if not images_dir.is_dir():
            problems.append(f"dataset: the {split} images folder {images_dir} is missing")
            continue
        images = _images(images_dir)
        stats[f"{split}Images"] = len(images)
        if not images:
            problems.append(f"dataset: no images in the {split} folder")
            continue
        labels_dir = labels_dir_for(images_dir)
        if not labels_dir.is_dir():
            problems.append(
                f"dataset: the {split} labels folder is missing (expected {labels_dir.name!r} next to the images, "
                "as YOLO's images/ -> labels/ convention requires)"
            )
            continue
        for sample in random.Random(0).sample(images, min(SAMPLE_IMAGES, len(images))):
            try:
                with Image.open(sample) as im:
                    im.verify()
            except Exception as e:  # noqa: BLE001
                problems.append(f"dataset: image {sample.name} is not readable ({type(e).__name__})")
                break
        bad_classes = set()
        label_files = list(labels_dir.rglob("*.txt"))
        stats["labelsChecked"] = stats.get("labelsChecked", 0) + len(label_files)
        for label in label_files:
            for line in label.read_text().splitlines():
                parts = line.split()
                if not parts:
                    continue
                try:
                    cls = int(float(parts[0]))
                    coords = [float(v) for v in parts[1:5]]
                except ValueError:
                    problems.append(f"dataset: {label.name} has a malformed line {line!r}")
                    break
                if cls < 0 or cls >= data["nc"]:
                    bad_classes.add(cls)
                if len(coords) < 4 or any(c < 0 or c > 1.0001 for c in coords):
                    problems.append(f"dataset: {label.name} has coordinates outside 0..1 (YOLO labels are normalised)")
                    break
        if bad_classes:
            problems.append(f"dataset: labels use class ids {sorted(bad_classes)[:5]} but data.yaml declares nc={data['nc']}")
    return problems, stats


def _variables_or_empty(text: str) -> dict:
    try:
        return variables(text)
    except RecipeError:
        return {}


def validate(
    spec: dict,
    dataset_root: Path,
    recipe_text: Callable[[ModelSpec], str],
    weights_path: Path | None = None,
    problems_found: list[str] | tuple = (),
) -> dict:
    """Every check at once: dataset, starting weights (what they are, whether they fit the
    model the spec asks for), recipe (parses, fits the model, fits the epochs override).
    Returns what the run will train; raises ValidationError listing every problem."""
    problems, stats = check_dataset(dataset_root)
    problems = [*problems_found, *problems]
    nc = max(1, int(stats.get("nc", 80)))
    weights = model = None
    out: dict = {"ok": True, "dataset": stats}
    if weights_path is not None:
        try:
            weights = read_weights(weights_path)
        except WeightsError as e:
            problems.append(str(e))
    try:
        model = resolve(spec["model"], nc, weights)
    except WeightsError as e:
        problems.append(str(e))
    if model is not None and weights is not None:
        from .model import build

        try:
            out["weights"] = {**load_into(build(model), weights), "description": weights.describe()}
        except WeightsError as e:
            problems.append(str(e))
    if model is not None:
        out["model"] = {"arch": model.arch, "layout": model.layout, "activation": model.activation, "nc": model.nc}
        try:
            text = recipe_text(model)
        except RecipeError as e:
            problems.append(str(e))
        else:
            problems += check_recipe(text, model, spec["recipe"].get("targetArch"), (spec.get("training") or {}).get("epochs"))
            known = _variables_or_empty(text)
            unknown = sorted(set(spec["recipe"].get("variables") or {}) - set(known))
            if unknown:
                problems.append(
                    f"recipe.variables names {', '.join(unknown)}, which the recipe does not have "
                    f"(it has: {', '.join(sorted(known)) or 'none'})"
                )
            out["recipeParams"] = len(recipe_params(text)) if not problems else 0
    if problems:
        raise ValidationError(problems)
    return out
