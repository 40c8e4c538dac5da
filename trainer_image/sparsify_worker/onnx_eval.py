"""mAP of an exported ONNX model (what is deployed, INT8 included), with YOLOv5's own val code.

The ONNX graph has a fixed image size, so images are letterboxed to a square of that size
(YOLOv5 val's rect batches would not fit it); the same loader is used for every model that is
compared, so the rows differ only by the model."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

from . import yolo_env


def _detector(path: Path, names: list[str], engine: str):
    import numpy as np
    import torch

    class OnnxDetector(torch.nn.Module):
        """Looks like a YOLOv5 model to val.run: images in, decoded predictions out."""

        def __init__(self):
            super().__init__()
            self.names = names
            self._dummy = torch.nn.Parameter(torch.zeros(1))  # val.run reads the device from a parameter
            if engine == "deepsparse":
                from deepsparse import compile_model

                self._engines: dict[int, object] = {}
                self._compile = lambda batch: compile_model(str(path), batch_size=batch)
            else:
                import onnxruntime as ort

                self._session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
                self._input = self._session.get_inputs()[0].name

        def forward(self, im, augment=False):
            x = im.detach().float().cpu().numpy().astype(np.float32)
            if engine == "deepsparse":
                batch = x.shape[0]
                if batch not in self._engines:
                    self._engines[batch] = self._compile(batch)
                out = self._engines[batch].run([np.ascontiguousarray(x)])[0]
            else:
                out = self._session.run(None, {self._input: x})[0]
            return torch.from_numpy(out)

    return OnnxDetector()


def evaluate_onnx(
    path: Path, data: dict, img_size: int, batch: int = 16, engine: str = "onnxruntime", save_dir: Path | None = None
) -> tuple[float, float]:
    """(mAP@0.5, mAP@0.5:0.95) of the ONNX model on data['val']."""
    yolo_env.prepare()
    import tempfile

    import yolov5.val as val
    from yolov5.utils.dataloaders import create_dataloader

    from .model import hyperparameters

    save_dir = save_dir or Path(tempfile.mkdtemp(prefix="onnx-eval-"))
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        loader = create_dataloader(data["val"], img_size, batch, 32, hyp=hyperparameters(), rect=False, rank=-1, workers=0, pad=0.0)[0]
        out = val.run(
            data=data,
            batch_size=batch,
            imgsz=img_size,
            model=_detector(path, data["names"], engine),
            dataloader=loader,
            half=False,
            plots=False,
            save_dir=save_dir,
            verbose=False,
        )
    return float(out[0][2]), float(out[0][3])
