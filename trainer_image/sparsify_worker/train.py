"""YOLOv5 training with a SparseML recipe: DDP through torchrun, EMA kept sparse, AMP off
once QAT starts, a checkpoint every epoch (resumable with masks and QAT structure).

`train` reads top-down: `restore` (the model and recipe, from the run's checkpoint or the
starting weights), `loaders`, then per epoch `train_epoch` and `save`."""

from __future__ import annotations

import contextlib
import datetime as dt
import gc
import hashlib
import io
import json
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from . import shims, yolo_env
from .data import load_data_yaml
from .model import ModelSpec, build, hyperparameters, sparsity
from .weights import load_into, read_weights, resolve

log = logging.getLogger("sparsify_worker.train")
CHECKPOINT_VERSION = 3  # 2: layout, start_map50; 3: run_uid
COLLECTIVE_TIMEOUT_SECONDS = 300


@dataclass
class TrainConfig:
    arch: str
    data_dir: Path
    recipe: str
    out_dir: Path
    recipe_variables: dict = field(default_factory=dict)
    activation: str | None = None  # None: from the weights, else the layout's default
    layout: str | None = None  # None: from the weights, else the arch's default
    batch_size: int = 16  # total over all ranks
    img_size: int = 640
    workers: int = 2
    weights: Path | None = None  # starting weights: an Ultralytics checkpoint, a state dict or a checkpoint of this worker
    resume_from: Path | None = None  # last.pt to resume from
    amp: bool = True
    seed: int = 0
    run_uid: str = ""  # the SparsifyJob's uid: recorded in checkpoints; a resume refuses another run's
    # called on rank 0 after each epoch with (epoch, last.pt, best.pt or None): uploads to S3
    on_checkpoint: Callable[[int, Path, Path | None], None] | None = None


@dataclass
class DistInfo:
    rank: int = 0
    local_rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed():
    import torch
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    info = DistInfo(int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0")), world)
    if world > 1 and not dist.is_initialized():
        # An explicit bound on every collective: a rank whose peer died fails in minutes (and the
        # Job's podFailurePolicy ends the group) instead of hanging until NCCL's default watchdog.
        timeout = dt.timedelta(seconds=float(os.environ.get("YOLO_SPARSIFY_COLLECTIVE_TIMEOUT_SECONDS", COLLECTIVE_TIMEOUT_SECONDS)))
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo", timeout=timeout)
    device = torch.device(f"cuda:{info.local_rank}" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return info, device


def final_structure_epoch(manager) -> float:
    """When the recipe stops changing the model's structure: pruning ends, QAT starts."""
    ends = [float(m.end_epoch) for m in manager.pruning_modifiers if float(m.end_epoch) > 0]
    starts = [float(m.start_epoch) for m in manager.quantization_modifiers]
    return max(ends + starts + [0.0])


def is_quantized(model) -> bool:
    import torch

    return any(isinstance(m, torch.ao.quantization.FakeQuantizeBase) for m in model.modules())


def mask_like(ema_model, model) -> None:
    """Pruned weights stay zero in the EMA too (an average of zeros and old values is not)."""
    import torch

    with torch.no_grad():
        params = dict(model.named_parameters())
        for name, p in ema_model.named_parameters():
            src = params.get(name)
            if src is not None and p.dim() == 4 and src.shape == p.shape:
                p.mul_(src.ne(0).to(p.dtype))


def weights_digest(model) -> str:
    """sha256 of every parameter: equal on all DDP ranks when they stayed in sync. (Buffers,
    BatchNorm statistics and QAT observers, are each rank's own until DDP broadcasts rank 0's
    at the next forward.)"""
    import hashlib

    h = hashlib.sha256()
    for name, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
        h.update(name.encode())
        h.update(p.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def mask_digest(model) -> str:
    """sha256 of where the weights are zero: the pruning masks, as every rank applies them."""
    import hashlib

    h = hashlib.sha256()
    for name, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
        if p.dim() == 4:
            h.update(name.encode())
            h.update(p.detach().eq(0).cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def broadcast_state(model) -> None:
    """Every rank starts from rank 0's weights and buffers, before the recipe computes anything
    from them (a mask from a rank's own initial weights would differ between ranks)."""
    import torch.distributed as dist

    for t in [*model.parameters(), *model.buffers()]:
        dist.broadcast(t.data, src=0)


def check_ranks_agree(digests: dict, epoch: int) -> list[dict]:
    """All ranks' digests (weights, masks) after an epoch; a rank that differs stops the run:
    its result would not be the model the recipe describes."""
    import torch.distributed as dist

    gathered: list = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, digests)
    if any(g != gathered[0] for g in gathered):
        raise RuntimeError(f"DDP ranks diverged after epoch {epoch}: {gathered}")
    return gathered


def _optimizer(model, hyp: dict):
    import torch

    decay, no_decay, bias = [], [], []
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if name == "bias":
                bias.append(p)
            elif isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                no_decay.append(p)
            else:
                decay.append(p)
    opt = torch.optim.SGD(no_decay, lr=hyp["lr0"], momentum=hyp["momentum"], nesterov=True)
    opt.add_param_group({"params": decay, "weight_decay": hyp["weight_decay"]})
    opt.add_param_group({"params": bias})
    return opt


def evaluate(model, data: dict, loader, img_size: int, batch: int, save_dir: Path) -> tuple[float, float]:
    """(mAP@0.5, mAP@0.5:0.95) of a PyTorch model on the loader's images (YOLOv5's val)."""
    import yolov5.val as val

    save_dir.mkdir(parents=True, exist_ok=True)
    with contextlib.redirect_stdout(io.StringIO()):
        out = val.run(
            data=data,
            batch_size=batch,
            imgsz=img_size,
            model=model,
            dataloader=loader,
            half=False,
            plots=False,
            save_dir=save_dir,
            verbose=False,
        )
    return float(out[0][2]), float(out[0][3])  # out[0] = (P, R, mAP@0.5, mAP@0.5:0.95, losses...)


def load_checkpoint(path: Path) -> dict:
    import torch

    ckpt = torch.load(path, map_location="cpu", weights_only=True)  # tensors and plain data only
    if not isinstance(ckpt, dict) or ckpt.get("format") != "sparsify-worker" or "model" not in ckpt:
        raise ValueError(f"{path} is not a checkpoint written by sparsify-worker")
    return ckpt


def structure_epoch(ckpt: dict) -> float:
    """The recipe time whose structure a checkpoint has: the end of its epoch, just before a
    change scheduled exactly there (QAT starting at epoch e+1 is not in the epoch-e checkpoint)."""
    return ckpt["epoch"] + 0.999


def checkpoint_model(ckpt: dict) -> ModelSpec:
    return ModelSpec(ckpt["arch"], ckpt.get("layout", "v5.0"), ckpt.get("activation", "Hardswish"), int(ckpt["nc"]))


def scaled_loss_gains(hyp: dict, nc: int, img_size: int, layers: int = 3) -> dict:
    """YOLOv5's loss gains are tuned for 80 classes at 640 px; its train.py scales them to the
    run's classes and image size (objectness by (img/640)^2), and so does this loop."""
    out = dict(hyp)
    out["box"] = hyp["box"] * 3 / layers
    out["cls"] = hyp["cls"] * nc / 80 * 3 / layers
    out["obj"] = hyp["obj"] * (img_size / 640) ** 2 * 3 / layers
    return out


def recipe_value(recipe: str, variables: dict, name: str, default):
    """A variable of the recipe (after overrides) that this worker reads itself."""
    from .recipes import RecipeError
    from .recipes import variables as recipe_variables

    if name in variables:
        return variables[name]
    try:
        return recipe_variables(recipe).get(name, default)
    except RecipeError:
        return default


def dense_teacher(spec: ModelSpec, weights, device):
    """The dense starting model, frozen: what the sparse student's outputs are pulled towards."""
    teacher = build(ModelSpec(spec.arch, spec.layout, spec.activation, weights.nc))  # the weights' own classes
    load_into(teacher, weights)
    teacher.to(device).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


def distillation_loss(student_out: list, teacher, imgs):
    """Output distillation for YOLO: mean squared difference of the sigmoid outputs (box
    offsets, objectness, class scores) of the three Detect levels. A Detect head re-initialised
    for new classes has no teacher for its class scores: only the shared channels count."""
    import torch

    with torch.no_grad():
        t_out = teacher(imgs)[1]  # eval mode: (decoded, raw maps); the raw maps match training outputs
    total = 0.0
    for s, t in zip(student_out, t_out):
        n = s.shape[-1] if s.shape[-1] == t.shape[-1] else 5  # x, y, w, h, objectness
        total = total + torch.nn.functional.mse_loss(s[..., :n].float().sigmoid(), t[..., :n].float().sigmoid())
    return total


def cuda_oom_fault() -> tuple[int, int] | None:
    """Fault injection for tests (CPU has no CUDA memory to run out of):
    YOLO_SPARSIFY_FAULT_CUDA_OOM="STEP:BATCH" raises torch.cuda.OutOfMemoryError at training step
    STEP (counted from this process's start) while the per-process batch exceeds BATCH."""
    raw = os.environ.get("YOLO_SPARSIFY_FAULT_CUDA_OOM")
    if not raw:
        return None
    step, _, batch = raw.partition(":")
    return int(step), int(batch or 0)


def restore_model(ckpt: dict, epoch: float | None = None):
    """Model + its recipe manager with the checkpoint's structure (masks, QAT) re-applied
    before the weights are loaded (a QAT model's state dict only fits a QAT model)."""
    from sparseml.pytorch.optim import ScheduledModifierManager

    shims.apply()
    model = build(checkpoint_model(ckpt))
    manager = ScheduledModifierManager.from_yaml(ckpt["recipe"], recipe_variables=ckpt.get("recipe_variables") or None)
    manager.apply_structure(model, epoch=structure_epoch(ckpt) if epoch is None else epoch)
    model.load_state_dict(ckpt["ema"] if ckpt.get("ema") else ckpt["model"])
    return model, manager


@dataclass
class Restored:
    """Where a run starts: a fresh model (maybe from weights) or a checkpoint's state."""

    spec: ModelSpec
    model: object
    manager: object  # the recipe's ScheduledModifierManager
    recipe: str
    variables: dict
    distill: float
    weights: object  # the starting weights (a new run's start, or the distillation teacher)
    loaded: dict | None = None  # what load_into did with the weights (a new run)
    start_epoch: int = 0
    best_map50: float = -1.0
    start_map50: float | None = None
    ema_state: dict | None = None
    ema_updates: int = 0
    opt_state: dict | None = None


def restore(cfg: TrainConfig, data: dict) -> Restored:
    """The model and recipe a run trains: from its last checkpoint (the same run only, with the
    schedule it started with), else from the arch or the starting weights."""
    from sparseml.pytorch.optim import ScheduledModifierManager

    recipe, variables = cfg.recipe, dict(cfg.recipe_variables or {})
    ckpt = load_checkpoint(cfg.resume_from) if cfg.resume_from else None
    if ckpt and cfg.run_uid and ckpt.get("run_uid") != cfg.run_uid:
        raise ValueError(
            f"{cfg.resume_from} belongs to another run (uid {ckpt.get('run_uid') or 'not recorded'}, this run is "
            f"{cfg.run_uid}): refusing to resume from it"
        )
    if ckpt and (ckpt["recipe"], ckpt.get("recipe_variables") or {}) != (recipe, variables):
        # a run keeps the schedule it started with: masks and QAT depend on it
        log.warning("resuming with the checkpoint's recipe schedule, not the one given now")
        recipe, variables = ckpt["recipe"], dict(ckpt.get("recipe_variables") or {})
    distill = float(recipe_value(recipe, variables, "distillation_weight", 0.0))
    # the weights are the start of a new run, and the teacher when the recipe distills
    weights = read_weights(cfg.weights) if cfg.weights and (not ckpt or distill > 0) else None
    if ckpt:
        spec = checkpoint_model(ckpt)
    else:
        spec = resolve({"arch": cfg.arch, "layout": cfg.layout, "activation": cfg.activation}, data["nc"], weights)
    if spec.nc != data["nc"]:
        raise ValueError(f"the checkpoint has {spec.nc} classes but data.yaml declares {data['nc']}")
    model = build(spec)
    manager = ScheduledModifierManager.from_yaml(recipe, recipe_variables=variables or None)
    r = Restored(spec, model, manager, recipe, variables, distill, weights)
    if ckpt:
        manager.apply_structure(model, epoch=structure_epoch(ckpt))
        model.load_state_dict(ckpt["model"])
        r.start_epoch, r.best_map50 = ckpt["epoch"] + 1, ckpt.get("best_map50", -1.0)
        r.ema_state, r.ema_updates, r.opt_state = ckpt.get("ema"), ckpt.get("ema_updates", 0), ckpt.get("optimizer")
        r.start_map50 = ckpt.get("start_map50")
        log.info("resuming at epoch %d from %s (sparsity %.3f)", r.start_epoch, cfg.resume_from, sparsity(model))
    elif weights:
        r.loaded = load_into(model, weights)
        log.info(
            "starting from %s%s",
            weights.describe(),
            " (Detect head re-initialised for the dataset's classes)" if r.loaded["headReset"] else "",
        )
    return r


def loaders(cfg: TrainConfig, data: dict, hyp: dict, stride: int, per_rank: int, dist_info: DistInfo):
    """The training loader (each rank its share) and, on rank 0, the validation loader."""
    from yolov5.utils.dataloaders import create_dataloader

    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        train_loader, dataset = create_dataloader(
            data["train"],
            cfg.img_size,
            per_rank,
            stride,
            hyp=hyp,
            augment=True,
            rank=dist_info.rank if dist_info.world > 1 else -1,
            workers=cfg.workers,
            shuffle=True,
            seed=cfg.seed,
        )
        val_loader = (
            create_dataloader(data["val"], cfg.img_size, per_rank * 2, stride, hyp=hyp, rect=True, rank=-1, workers=cfg.workers, pad=0.5)[0]
            if dist_info.main
            else None
        )
    if int(dataset.labels[0][:, 0].max() if len(dataset.labels) else 0) >= data["nc"]:
        raise ValueError("labels use class ids beyond data.yaml's nc")
    return train_loader, val_loader


@dataclass
class Loop:
    """What changes while training: the QAT switch swaps the DDP wrapper, the EMA and the scaler."""

    model: object
    ddp: object
    ema: object | None
    optimizer: object
    scaler: object
    compute_loss: object
    teacher: object | None
    distill: float
    device: object
    dist_info: DistInfo
    per_rank: int
    use_cuda_amp: bool
    qat: bool
    wrappers: int  # live DDP wrappers: one, also after QAT re-wraps
    fault: tuple[int, int] | None = None
    step: int = 0


def train_epoch(loop: Loop, train_loader, epoch: int) -> tuple[list[float], str | None]:
    """One pass over this rank's share of the data; the losses, and the sample order's digest."""
    import torch
    from torch.nn.parallel import DistributedDataParallel as DDP
    from yolov5.utils.torch_utils import ModelEMA

    order = None
    if hasattr(train_loader.sampler, "set_epoch"):
        train_loader.sampler.set_epoch(epoch)  # a new order every epoch (the same on every rank)
        order = hashlib.sha256(json.dumps(list(train_loader.sampler)).encode()).hexdigest()[:16]
    loop.ddp.train()
    losses = []
    world = loop.dist_info.world
    for imgs, targets, _, _ in train_loader:
        loop.step += 1
        if loop.fault and loop.step >= loop.fault[0] and loop.per_rank > loop.fault[1]:
            raise torch.cuda.OutOfMemoryError(
                f"CUDA out of memory (injected by YOLO_SPARSIFY_FAULT_CUDA_OOM at step {loop.step}, batch {loop.per_rank} per process)"
            )
        imgs = imgs.to(loop.device, non_blocking=True).float() / 255
        with torch.autocast(device_type=loop.device.type, enabled=loop.use_cuda_amp and not loop.qat):
            pred = loop.ddp(imgs)
            loss, _ = loop.compute_loss(pred, targets.to(loop.device))
            if loop.teacher is not None:
                loss = loss + loop.distill * imgs.shape[0] * distillation_loss(pred, loop.teacher, imgs)
        if world > 1:
            loss = loss * world  # DDP averages gradients over ranks
        loop.scaler.scale(loss).backward()
        loop.scaler.step(loop.optimizer)
        loop.scaler.update()
        loop.optimizer.zero_grad(set_to_none=True)
        if not loop.qat and is_quantized(loop.model):  # the manager just started QAT (inside step())
            loop.qat = True
            loop.scaler = torch.cuda.amp.GradScaler(enabled=False)  # fake-quant observers need fp32
            if world > 1:
                # QAT swapped modules: DDP must see the new parameters. The old wrapper goes
                # first: its reducer's gradient hooks on the shared parameters go with it.
                loop.ddp = None
                gc.collect()
                loop.ddp = DDP(loop.model)
                loop.wrappers = sum(isinstance(o, DDP) for o in gc.get_objects())
            if loop.ema:
                loop.ema = ModelEMA(loop.model)  # the EMA needs the same (quantized) structure
            log.info("QAT started at epoch %d: AMP off, EMA restarted", epoch)
        if loop.ema:
            loop.ema.update(loop.model)
            mask_like(loop.ema.ema, loop.model)
        losses.append(float(loss.detach()))
    return losses, order


def save(out: Path, ckpt: dict, improved: bool) -> tuple[Path, Path | None]:
    """last.pt every epoch, best.pt when it improved; each written whole, then renamed."""
    import torch

    last = out / "last.pt"
    torch.save(ckpt, out / ".last.pt.tmp")
    os.replace(out / ".last.pt.tmp", last)
    best = None
    if improved:
        best = out / "best.pt"
        torch.save(ckpt, out / ".best.pt.tmp")
        os.replace(out / ".best.pt.tmp", best)
    return last, best


def train(cfg: TrainConfig) -> dict:
    yolo_env.prepare()
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP
    from yolov5.utils.loss import ComputeLoss
    from yolov5.utils.torch_utils import ModelEMA

    shims.apply()
    dist_info, device = init_distributed()
    torch.manual_seed(cfg.seed)  # the same on every rank: the same model (the data loader seeds per rank itself)
    data = load_data_yaml(cfg.data_dir)
    hyp = hyperparameters()
    if cfg.batch_size % dist_info.world:
        raise ValueError(f"batch size {cfg.batch_size} is not divisible by {dist_info.world} processes")
    per_rank = cfg.batch_size // dist_info.world

    r = restore(cfg, data)
    model, spec, manager = r.model, r.spec, r.manager
    epochs = int(math.ceil(manager.max_epochs))
    final_structure = final_structure_epoch(manager)
    model.nc, model.names, model.hyp = data["nc"], data["names"], scaled_loss_gains(hyp, data["nc"], cfg.img_size)
    model.to(device)
    train_loader, val_loader = loaders(cfg, data, hyp, int(max(model.stride.max(), 32)), per_rank, dist_info)
    start_map50, best_map50 = r.start_map50, r.best_map50
    if r.loaded and not r.loaded["headReset"] and dist_info.main:
        # the dense model's accuracy on the same validation images: what sparse results are compared with
        start_map50 = evaluate(model, data, val_loader, cfg.img_size, per_rank * 2, cfg.out_dir)[0]
        log.info("starting weights: mAP@0.5 %.4f on the validation images", start_map50)
    optimizer = _optimizer(model, hyp)
    if r.opt_state:
        try:
            optimizer.load_state_dict(r.opt_state)
        except (ValueError, KeyError) as e:  # e.g. QAT changed the parameter list
            log.warning("optimizer state not restored (%s); continuing with a fresh one", e)
    if dist_info.world > 1:
        broadcast_state(model)
    optimizer = manager.modify(model, optimizer, steps_per_epoch=len(train_loader), epoch=float(r.start_epoch))

    teacher = dense_teacher(spec, r.weights, device) if r.distill > 0 and r.weights is not None else None
    if teacher is not None:
        log.info("distilling from the dense starting weights (weight %.3g)", r.distill)
    ema = ModelEMA(model) if dist_info.main else None
    if ema and r.ema_state:
        with contextlib.suppress(RuntimeError):
            ema.ema.load_state_dict(r.ema_state)
            ema.updates = r.ema_updates
    use_cuda_amp = cfg.amp and device.type == "cuda"
    qat = is_quantized(model)
    loop = Loop(
        model=model,
        ddp=DDP(model) if dist_info.world > 1 else model,
        ema=ema,
        optimizer=optimizer,
        scaler=torch.cuda.amp.GradScaler(enabled=use_cuda_amp and not qat),
        compute_loss=ComputeLoss(model),
        teacher=teacher,
        distill=r.distill,
        device=device,
        dist_info=dist_info,
        per_rank=per_rank,
        use_cuda_amp=use_cuda_amp,
        qat=qat,
        wrappers=1 if dist_info.world > 1 else 0,
        fault=cuda_oom_fault(),
    )
    out = cfg.out_dir
    out.mkdir(parents=True, exist_ok=True)
    map50 = best_map50
    history = []
    agreed: list[dict] = []  # per epoch: the ranks' common digests
    for epoch in range(r.start_epoch, epochs):
        t0 = time.monotonic()
        losses, order = train_epoch(loop, train_loader, epoch)
        if dist_info.main:
            map50, map50_95 = evaluate(loop.ema.ema, data, val_loader, cfg.img_size, per_rank * 2, out)
            # best.pt only from epochs with the final structure (pruned, quantized): an early dense
            # epoch with a lucky mAP is not what the recipe asked for
            eligible = epoch + 1 > final_structure  # a change at t=3.0 happens in epoch 3, not 2
            improved = eligible and (map50 > best_map50 or not (out / "best.pt").exists())
            if eligible:
                best_map50 = max(best_map50, map50)
            ckpt = {
                "format": "sparsify-worker",
                "version": CHECKPOINT_VERSION,
                "epoch": epoch,
                "arch": spec.arch,
                "layout": spec.layout,
                "activation": spec.activation,
                "nc": data["nc"],
                "names": data["names"],
                "recipe": r.recipe,
                "recipe_variables": r.variables,
                "model": model.state_dict(),
                "ema": loop.ema.ema.state_dict(),
                "ema_updates": loop.ema.updates,
                "optimizer": loop.optimizer.state_dict(),
                "map50": map50,
                "best_map50": best_map50,
                "start_map50": start_map50,
                "batch_size": cfg.batch_size,
                "img_size": cfg.img_size,
                "quantized": loop.qat,
                "sparsity": sparsity(model),
                "run_uid": cfg.run_uid,
            }
            last, best = save(out, ckpt, improved)
            entry = {
                "epoch": epoch,
                "loss": round(sum(losses) / max(1, len(losses)), 4),
                "map50": round(map50, 4),
                "map50_95": round(map50_95, 4),
                "sparsity": round(sparsity(model), 4),
                "qat": loop.qat,
                "amp": loop.scaler.is_enabled(),
                "seconds": round(time.monotonic() - t0, 1),
            }
            history.append(entry)
            log.info("epoch %d/%d %s", epoch + 1, epochs, entry)
            print(f"epoch {epoch + 1}/{epochs} {entry}", flush=True)
            if cfg.on_checkpoint:
                cfg.on_checkpoint(epoch, last, best)
        digests = {"weights": weights_digest(model), "masks": mask_digest(model), "qat": loop.qat}
        if dist_info.world > 1:
            check_ranks_agree(digests, epoch)
        agreed.append({"epoch": epoch, **digests, "order": order, "ddpWrappers": loop.wrappers})  # order: this rank's share
    manager.finalize(model)
    final_sparsity = sparsity(model)
    digest = weights_digest(model)
    if dist_info.world > 1:
        check_ranks_agree({"final": digest}, epochs)
        dist.destroy_process_group()
    return {
        "epochs": epochs,
        "startEpoch": r.start_epoch,
        "bestMap50": round(max(best_map50, 0.0), 4),
        "startMap50": None if start_map50 is None else round(start_map50, 4),
        "model": {"arch": spec.arch, "layout": spec.layout, "activation": spec.activation, "nc": spec.nc},
        "lastMap50": round(max(map50, 0.0), 4),
        "sparsity": round(final_sparsity, 4),
        "quantized": loop.qat,
        "batchSize": cfg.batch_size,
        "world": dist_info.world,
        "rank": dist_info.rank,
        "weightsDigest": digest,
        "rankDigests": agreed,
        "history": history,
    }
