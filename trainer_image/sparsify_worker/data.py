"""YOLO-format datasets: a small generator (tests), a fixed split of a real one (coco128 for
the demo and the accuracy benchmark), and reading data.yaml."""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import yaml

SHAPES = ("box", "disc", "bar")
COLORS = ((230, 60, 60), (60, 200, 80), (70, 90, 240))


def generate(root: Path, train: int = 64, val: int = 16, size: int = 160, seed: int = 0) -> Path:
    """Images with 1-3 coloured shapes of 3 classes on a noisy background, and their labels."""
    import numpy as np
    from PIL import Image, ImageDraw

    rng = random.Random(seed)
    nrng = np.random.default_rng(seed)
    for split, count in (("train", train), ("val", val)):
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "labels" / split).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            img = Image.fromarray(nrng.integers(0, 60, (size, size, 3), dtype=np.uint8))
            draw = ImageDraw.Draw(img)
            lines = []
            for _ in range(rng.randint(1, 3)):
                cls = rng.randrange(3)
                w, h = rng.randint(size // 6, size // 2), rng.randint(size // 6, size // 2)
                if SHAPES[cls] == "bar":
                    h = max(8, w // 3)
                x0, y0 = rng.randint(0, size - w), rng.randint(0, size - h)
                box = (x0, y0, x0 + w, y0 + h)
                (draw.ellipse if SHAPES[cls] == "disc" else draw.rectangle)(box, fill=COLORS[cls])
                lines.append(f"{cls} {(x0 + w / 2) / size:.6f} {(y0 + h / 2) / size:.6f} {w / size:.6f} {h / size:.6f}")
            img.save(root / "images" / split / f"{i:05d}.jpg", quality=92)
            (root / "labels" / split / f"{i:05d}.txt").write_text("\n".join(lines) + "\n")
    (root / "data.yaml").write_text(
        yaml.safe_dump({"path": ".", "train": "images/train", "val": "images/val", "nc": 3, "names": list(SHAPES)}, sort_keys=False)
    )
    return root


COCO_NAMES = (  # the 80 COCO class names, in the order of the class ids YOLO labels use
    "person",
    "bicycle",
    "car",
    "motorcycle",
    "airplane",
    "bus",
    "train",
    "truck",
    "boat",
    "traffic light",
    "fire hydrant",
    "stop sign",
    "parking meter",
    "bench",
    "bird",
    "cat",
    "dog",
    "horse",
    "sheep",
    "cow",
    "elephant",
    "bear",
    "zebra",
    "giraffe",
    "backpack",
    "umbrella",
    "handbag",
    "tie",
    "suitcase",
    "frisbee",
    "skis",
    "snowboard",
    "sports ball",
    "kite",
    "baseball bat",
    "baseball glove",
    "skateboard",
    "surfboard",
    "tennis racket",
    "bottle",
    "wine glass",
    "cup",
    "fork",
    "knife",
    "spoon",
    "bowl",
    "banana",
    "apple",
    "sandwich",
    "orange",
    "broccoli",
    "carrot",
    "hot dog",
    "pizza",
    "donut",
    "cake",
    "chair",
    "couch",
    "potted plant",
    "bed",
    "dining table",
    "toilet",
    "tv",
    "laptop",
    "mouse",
    "remote",
    "keyboard",
    "cell phone",
    "microwave",
    "oven",
    "toaster",
    "sink",
    "refrigerator",
    "book",
    "clock",
    "vase",
    "scissors",
    "teddy bear",
    "hair drier",
    "toothbrush",
)


def split(source: Path, root: Path, train: int, val: int, names: tuple[str, ...] = COCO_NAMES) -> Path:
    """A fixed split of a flat YOLO dataset (source/images/*/X.jpg + source/labels/*/X.txt):
    the first `train` images by file name for training, the next `val` for validation, so
    every run and every benchmark row is evaluated on the same images."""
    images = sorted(p for p in (source / "images").rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if len(images) < train + val:
        raise ValueError(f"{source} has {len(images)} images, fewer than {train} + {val}")
    for split_name, chosen in (("train", images[:train]), ("val", images[train : train + val])):
        (root / "images" / split_name).mkdir(parents=True, exist_ok=True)
        (root / "labels" / split_name).mkdir(parents=True, exist_ok=True)
        for img in chosen:
            shutil.copyfile(img, root / "images" / split_name / img.name)
            label = source / "labels" / img.parent.name / f"{img.stem}.txt"
            (root / "labels" / split_name / f"{img.stem}.txt").write_text(label.read_text() if label.exists() else "")
    (root / "data.yaml").write_text(
        yaml.safe_dump({"path": ".", "train": "images/train", "val": "images/val", "nc": len(names), "names": list(names)}, sort_keys=False)
    )
    return root


def load_data_yaml(root: Path) -> dict:
    """data.yaml with paths made absolute (YOLOv5's check_dataset would try to download)."""
    path = root / "data.yaml"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: a YOLO dataset needs data.yaml at its top")
    d = yaml.safe_load(path.read_text()) or {}
    base = (root / d.get("path", ".")).resolve() if not Path(str(d.get("path", "."))).is_absolute() else Path(d["path"])
    for split in ("train", "val"):
        if split not in d:
            raise ValueError(f"data.yaml has no {split!r} entry")
        d[split] = str((base / d[split]).resolve())
    names = d.get("names")
    if isinstance(names, dict):
        names = [names[k] for k in sorted(names)]
    d["names"] = list(names or [])
    d["nc"] = int(d.get("nc", len(d["names"])))
    if d["nc"] != len(d["names"]):
        raise ValueError(f"data.yaml says nc={d['nc']} but lists {len(d['names'])} names")
    return d
