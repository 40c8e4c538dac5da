"""Materialise a pod's volumes as directories under the pod's state dir.

emptyDir, secret, configMap, downwardAPI, projected (service-account token, ConfigMap, Secret,
downward API) and hostPath. API reads go through the callables passed in, so this module
knows the Kubernetes volume rules and nothing about HTTP."""

from __future__ import annotations

import base64
import os
from collections.abc import Callable
from pathlib import Path

from .podenv import EnvError, Lookup, field_path_value

# (namespace, serviceAccountName, audiences, expirationSeconds, pod) -> token
TokenIssuer = Callable[[str, str, "list[str]", int, dict], str]


class VolumeError(Exception):
    """A volume cannot be set up (yet): the pod waits in ContainerCreating and retries."""


def _write_items(directory: Path, data: dict[str, bytes], items: list[dict] | None, mode: int | None) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    chosen = [(i["key"], i["path"], i.get("mode")) for i in items] if items else [(k, k, None) for k in data]
    for key, rel, item_mode in chosen:
        if key not in data:
            raise VolumeError(f"key {key!r} not found")
        target = directory / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.tmp")
        tmp.write_bytes(data[key])
        tmp.chmod(item_mode if item_mode is not None else (mode if mode is not None else 0o644))
        tmp.replace(target)


def _decoded(data: dict[str, str] | None, b64: bool) -> dict[str, bytes]:
    return {k: (base64.b64decode(v) if b64 else v.encode()) for k, v in (data or {}).items()}


class VolumeBuilder:
    def __init__(self, secrets_raw: Lookup, config_maps: Lookup, issue_token: TokenIssuer):
        """`secrets_raw` returns base64 values as the API does; `config_maps` plain strings."""
        self.secrets_raw = secrets_raw
        self.config_maps = config_maps
        self.issue_token = issue_token

    def _object(self, kind: str, ref: dict, ns: str) -> dict[str, bytes] | None:
        if kind == "secret":
            data = self.secrets_raw(ns, ref.get("secretName") or ref["name"])
            return None if data is None else _decoded(data, b64=True)
        data = self.config_maps(ns, ref["name"])
        return None if data is None else _decoded(data, b64=False)

    def build(self, pod: dict, volume: dict, root: Path) -> Path:
        ns = pod["metadata"]["namespace"]
        name = volume["name"]
        target = root / name
        if "emptyDir" in volume:
            target.mkdir(parents=True, exist_ok=True)
            return target
        if "hostPath" in volume:
            path = Path(volume["hostPath"]["path"])
            if volume["hostPath"].get("type") in ("DirectoryOrCreate", None, "") and not path.exists():
                path.mkdir(parents=True, exist_ok=True)
            return path
        if "secret" in volume or "configMap" in volume:
            kind = "secret" if "secret" in volume else "configMap"
            src = volume[kind]
            data = self._object("secret" if kind == "secret" else "configmap", src, ns)
            if data is None:
                if src.get("optional"):
                    target.mkdir(parents=True, exist_ok=True)
                    return target
                ref = src.get("secretName") or src.get("name")
                raise VolumeError(f'{kind} "{ref}" not found')
            _write_items(target, data, src.get("items"), src.get("defaultMode"))
            return target
        if "downwardAPI" in volume:
            self._downward(pod, volume["downwardAPI"].get("items") or [], target)
            return target
        if "projected" in volume:
            proj = volume["projected"]
            target.mkdir(parents=True, exist_ok=True)
            for source in proj.get("sources") or []:
                if "serviceAccountToken" in source:
                    sat = source["serviceAccountToken"]
                    audiences = [sat["audience"]] if sat.get("audience") else []
                    sa = pod["spec"].get("serviceAccountName") or "default"
                    token = self.issue_token(ns, sa, audiences, int(sat.get("expirationSeconds") or 3600), pod)
                    _write_items(target, {"t": token.encode()}, [{"key": "t", "path": sat["path"]}], proj.get("defaultMode"))
                elif "configMap" in source or "secret" in source:
                    kind = "configMap" if "configMap" in source else "secret"
                    src = source[kind]
                    data = self._object("configmap" if kind == "configMap" else "secret", src, ns)
                    if data is None:
                        if src.get("optional"):
                            continue
                        raise VolumeError(f'{kind} "{src["name"]}" not found')
                    _write_items(target, data, src.get("items"), proj.get("defaultMode"))
                elif "downwardAPI" in source:
                    self._downward(pod, source["downwardAPI"].get("items") or [], target)
            return target
        unsupported = next((k for k in volume if k != "name"), "?")
        raise VolumeError(f"volume {name!r}: type {unsupported!r} is not supported by the process-kubelet")

    @staticmethod
    def _downward(pod: dict, items: list[dict], target: Path) -> None:
        data: dict[str, bytes] = {}
        for item in items:
            if "fieldRef" not in item:
                raise VolumeError("downwardAPI: only fieldRef items are supported")
            try:
                data[item["path"]] = field_path_value(pod, item["fieldRef"]["fieldPath"]).encode()
            except EnvError as e:
                raise VolumeError(str(e)) from e
        _write_items(target, data, None, None)


def ensure_file(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        path.touch()
    os.chmod(path, 0o666)
    return path
