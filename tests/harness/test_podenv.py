"""Pure rules of the process-kubelet's environment handling (no cluster needed)."""

import pytest

from localcluster.podenv import EnvError, container_argv, container_env, expand

POD = {
    "metadata": {
        "name": "p",
        "namespace": "ns",
        "uid": "u1",
        "labels": {"app": "x"},
        "annotations": {"batch.kubernetes.io/job-completion-index": "2"},
    },
    "spec": {"nodeName": "gpu-node-0", "serviceAccountName": "sa"},
    "status": {"podIP": "127.1.0.9"},
}


def test_expand_known_unknown_and_escaped():
    env = {"A": "1"}
    assert expand("$(A)-$(B)-$$(A)", env) == "1-$(B)-$(A)"


def test_env_order_envfrom_then_env_then_expansion():
    secrets = {("ns", "creds"): {"KEY": "s3cr3t", "OTHER": "o"}}
    cms = {("ns", "cfg"): {"MODE": "fast", "KEY": "from-cm"}}
    container = {
        "envFrom": [{"configMapRef": {"name": "cfg"}}, {"secretRef": {"name": "creds"}, "prefix": "S_"}],
        "env": [
            {"name": "MODE", "value": "slow-$(KEY)"},
            {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "KEY"}}},
            {"name": "IDX", "valueFrom": {"fieldRef": {"fieldPath": "metadata.annotations['batch.kubernetes.io/job-completion-index']"}}},
            {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
            {"name": "MISSING_OK", "valueFrom": {"secretKeyRef": {"name": "nope", "key": "k", "optional": True}}},
        ],
    }
    env = container_env(POD, container, {"PATH": "/bin"}, lambda ns, n: secrets.get((ns, n)), lambda ns, n: cms.get((ns, n)))
    assert env["MODE"] == "slow-from-cm"
    assert env["S_KEY"] == "s3cr3t" and env["TOKEN"] == "s3cr3t"
    assert env["IDX"] == "2" and env["NODE"] == "gpu-node-0"
    assert "MISSING_OK" not in env and env["PATH"] == "/bin"


def test_missing_secret_is_a_config_error():
    container = {"env": [{"name": "T", "valueFrom": {"secretKeyRef": {"name": "absent", "key": "k"}}}]}
    with pytest.raises(EnvError, match='secret "absent" not found'):
        container_env(POD, container, {}, lambda *_: None, lambda *_: None)


def test_argv_expansion_and_unknown_entrypoint():
    assert container_argv({"command": ["echo"], "args": ["$(X)", "$(Y)"]}, {"X": "1"}, {}) == ["echo", "1", "$(Y)"]
    assert container_argv({"image": "reg.io/team/op:1.2"}, {}, {"op": ["run-op"]}) == ["run-op"]
    with pytest.raises(EnvError, match="no known entrypoint"):
        container_argv({"image": "busybox"}, {}, {})
