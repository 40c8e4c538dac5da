"""Import the YOLOv5 package (Ultralytics v7.0 on PyPI) quietly and offline.

Its import reads and writes settings under $HOME and may try to pip-install requirements;
in a pod with a read-only root filesystem and no network both must be pointed elsewhere."""

from __future__ import annotations

import logging
import os
import tempfile


def prepare() -> None:
    cfg = os.environ.setdefault("YOLO_CONFIG_DIR", os.path.join(tempfile.gettempdir(), "yolo-config"))
    os.environ.setdefault("YOLOv5_CONFIG_DIR", cfg)
    os.environ.setdefault("YOLOv5_AUTOINSTALL", "false")
    os.environ.setdefault("YOLOv5_VERBOSE", "false")  # its import re-configures logging at INFO otherwise
    os.environ.setdefault("YOLO_OFFLINE", "true")
    os.environ.setdefault("NM_DISABLE_ANALYTICS", "1")
    os.environ.setdefault("MPLCONFIGDIR", os.path.join(tempfile.gettempdir(), "matplotlib"))
    os.makedirs(cfg, exist_ok=True)
    for name in ("yolov5", "ultralytics"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # SparseML opens sparse_logs/<time>.log in the working directory unless its logger already
    # has a file handler: give it one in the temp dir (a pod's only writable place; not the repo).
    sparseml_log = logging.getLogger("sparseml.pytorch.utils.logger")
    if not any(isinstance(h, logging.FileHandler) for h in sparseml_log.handlers):
        sparseml_log.addHandler(logging.FileHandler(os.path.join(tempfile.gettempdir(), "sparseml-modifiers.log"), delay=True))
