"""Pure helpers that turn a pod spec into what a process needs: environment and argv.

No API calls here: lookups of Secrets and ConfigMaps are passed in as functions, so the
rules (envFrom before env, `$(VAR)` expansion, downward-API field paths) are testable alone."""

from __future__ import annotations

import re
from collections.abc import Callable

# (namespace, name) -> {key: str value} or None when the object does not exist
Lookup = Callable[[str, str], "dict[str, str] | None"]

_VAR_REF = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


class EnvError(Exception):
    """A referenced Secret/ConfigMap/key is missing: the container cannot be created yet."""


def expand(value: str, env: dict[str, str]) -> str:
    """Kubernetes `$(VAR)` expansion: known variables are replaced, unknown ones are left as
    written, `$$` escapes a dollar."""

    def sub(m: re.Match) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group(1)
        return env.get(name, m.group(0))

    return _VAR_REF.sub(sub, value)


def field_path_value(pod: dict, path: str) -> str:
    meta, spec, status = pod.get("metadata", {}), pod.get("spec", {}), pod.get("status", {})
    m = re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", path)
    if m:
        return (meta.get(m.group(1)) or {}).get(m.group(2), "")
    simple = {
        "metadata.name": meta.get("name", ""),
        "metadata.namespace": meta.get("namespace", ""),
        "metadata.uid": meta.get("uid", ""),
        "spec.nodeName": spec.get("nodeName", ""),
        "spec.serviceAccountName": spec.get("serviceAccountName", ""),
        "status.podIP": status.get("podIP", ""),
        "status.hostIP": status.get("hostIP", ""),
    }
    if path not in simple:
        raise EnvError(f"unsupported fieldRef {path!r}")
    return simple[path]


def resource_field_value(container: dict, resource: str) -> str:
    """The container's request/limit as written (divisors are not applied)."""
    kind, _, name = resource.partition(".")
    value = ((container.get("resources") or {}).get(kind) or {}).get(name)
    return "0" if value is None else str(value)


def _source(kind: str, ref: dict, namespace: str, lookup: Lookup, key: str | None = None) -> dict[str, str] | str | None:
    data = lookup(namespace, ref["name"])
    optional = bool(ref.get("optional"))
    if data is None:
        if optional:
            return None
        raise EnvError(f'{kind} "{ref["name"]}" not found')
    if key is None:
        return data
    if key not in data:
        if optional:
            return None
        raise EnvError(f"couldn't find key {key} in {kind} {namespace}/{ref['name']}")
    return data[key]


def container_env(pod: dict, container: dict, base: dict[str, str], secrets: Lookup, config_maps: Lookup) -> dict[str, str]:
    """The environment of one container: `base` (PATH, service variables, ...), then envFrom,
    then env, in the order Kubernetes applies them."""
    ns = pod["metadata"]["namespace"]
    env = dict(base)
    for src in container.get("envFrom") or []:
        prefix = src.get("prefix", "")
        if "configMapRef" in src:
            data = _source("configmap", src["configMapRef"], ns, config_maps)
        elif "secretRef" in src:
            data = _source("secret", src["secretRef"], ns, secrets)
        else:
            continue
        for k, v in (data or {}).items():  # type: ignore[union-attr]
            env[prefix + k] = v
    for var in container.get("env") or []:
        name = var["name"]
        if "value" in var:
            env[name] = expand(var.get("value") or "", env)
            continue
        vf = var.get("valueFrom") or {}
        if "secretKeyRef" in vf:
            value = _source("secret", vf["secretKeyRef"], ns, secrets, vf["secretKeyRef"]["key"])
        elif "configMapKeyRef" in vf:
            value = _source("configmap", vf["configMapKeyRef"], ns, config_maps, vf["configMapKeyRef"]["key"])
        elif "fieldRef" in vf:
            value = field_path_value(pod, vf["fieldRef"]["fieldPath"])
        elif "resourceFieldRef" in vf:
            rf = vf["resourceFieldRef"]
            value = resource_field_value(container, rf["resource"])
        else:
            value = ""
        if value is not None:
            env[name] = value  # type: ignore[assignment]
    return env


def container_argv(container: dict, env: dict[str, str], image_entrypoints: dict[str, list[str]]) -> list[str]:
    """command/args with `$(VAR)` expansion. A container without `command` runs its image's
    entrypoint, which the local runtime only knows from `image_entrypoints` (image name without
    tag or digest -> argv)."""
    command = container.get("command")
    if not command:
        image = re.split(r"[@:]", container.get("image", "").rsplit("/", 1)[-1])[0]
        command = image_entrypoints.get(image) or image_entrypoints.get(container.get("image", ""))
        if not command:
            raise EnvError(f"image {container.get('image')!r} has no known entrypoint on the local runtime; give the container a `command`")
    args = container.get("args") or []
    return [expand(a, env) for a in [*command, *args]]
