"""The local control plane with plain Kubernetes objects: real API server, scheduler, Job
controller and garbage collector, with pods run by the process-kubelet."""

from __future__ import annotations

import io
import json
import os
import textwrap
import time

import pytest
from kubernetes import client

from localcluster import faults
from localcluster.testing import job_condition, kubectl, pod_of_job, wait_until

pytestmark = pytest.mark.cluster
PY = "python:3.11"  # any image name: the process-kubelet maps every image to the local env


def job(name: str, script: str, *, node_selector=None, backoff=0, restart="Never", **pod_extra) -> dict:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "backoffLimit": backoff,
            "template": {
                "spec": {
                    "restartPolicy": restart,
                    "nodeSelector": node_selector or {},
                    "containers": [{"name": "main", "image": PY, "command": ["python", "-c", textwrap.dedent(script)]}],
                    **pod_extra,
                }
            },
        },
    }


def pod(name: str, script: str, **spec) -> dict:
    containers = spec.pop("containers", None) or [{"name": "main", "image": PY, "command": ["python", "-c", textwrap.dedent(script)]}]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"restartPolicy": "Never", "containers": containers, **spec},
    }


def container_state(core, ns, name, index=0) -> client.V1ContainerState:
    return core.read_namespaced_pod(name, ns).status.container_statuses[index].state


def terminated(core, ns, name):
    p = core.read_namespaced_pod(name, ns)
    statuses = p.status.container_statuses or []
    return statuses and statuses[0].state.terminated


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:
        return f.read().split()[2] != "Z"


def test_job_on_c5_node_runs_to_completion(core, batch, namespace):
    batch.create_namespaced_job(
        namespace, job("hello", "print('hello from the c5 pool')", node_selector={"node.kubernetes.io/instance-type": "c5.12xlarge"})
    )
    assert wait_until(lambda: job_condition(batch, namespace, "hello"), 60, what="job to finish") == "Complete"
    (p,) = pod_of_job(core, namespace, "hello")
    assert p.spec.node_name.startswith("cpu-node-")
    node = core.read_node(p.spec.node_name)
    assert node.metadata.labels["node.kubernetes.io/instance-type"] == "c5.12xlarge"
    assert p.status.phase == "Succeeded"
    st = p.status.container_statuses[0].state.terminated
    assert st.exit_code == 0 and st.reason == "Completed"


def test_gpu_pod_lands_only_on_gpu_node_and_only_with_toleration(core, namespace):
    gpu = {"limits": {"nvidia.com/gpu": "2"}}
    main = {"name": "main", "image": PY, "command": ["python", "-c", "print('gpu')"], "resources": gpu}
    core.create_namespaced_pod(namespace, pod("no-toleration", "", containers=[main]))
    tolerations = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    core.create_namespaced_pod(namespace, pod("with-toleration", "", containers=[main], tolerations=tolerations))

    def unschedulable():
        conds = core.read_namespaced_pod("no-toleration", namespace).status.conditions or []
        return next((c for c in conds if c.type == "PodScheduled" and c.status == "False"), None)

    cond = wait_until(unschedulable, 30, what="PodScheduled=False for the pod without toleration")
    assert cond.reason == "Unschedulable"
    assert "untolerated taint" in cond.message and "nvidia.com/gpu" in cond.message  # GPU nodes refuse it, c5 lacks GPUs
    wait_until(lambda: terminated(core, namespace, "with-toleration"), 30, what="GPU pod to run")
    placed = core.read_namespaced_pod("with-toleration", namespace)
    assert placed.spec.node_name.startswith("gpu-node-")
    assert placed.status.phase == "Succeeded"
    assert core.read_namespaced_pod("no-toleration", namespace).spec.node_name is None


def test_failing_pod_exhausts_backoff_limit(core, batch, namespace):
    batch.create_namespaced_job(namespace, job("fails", "import sys; sys.exit(3)", backoff=1))
    assert wait_until(lambda: job_condition(batch, namespace, "fails"), 90, what="job to fail") == "Failed"
    j = batch.read_namespaced_job("fails", namespace)
    failed = next(c for c in j.status.conditions if c.type == "Failed")
    assert failed.reason == "BackoffLimitExceeded"
    assert j.status.failed == 2
    pods = pod_of_job(core, namespace, "fails")
    codes = sorted(p.status.container_statuses[0].state.terminated.exit_code for p in pods)
    assert codes == [3, 3]
    assert all(p.status.container_statuses[0].state.terminated.reason == "Error" for p in pods)


def test_deleting_a_job_garbage_collects_its_pods_and_processes(core, batch, namespace):
    batch.create_namespaced_job(namespace, job("long", "import time; time.sleep(600)"))
    running = wait_until(lambda: [p for p in pod_of_job(core, namespace, "long") if p.status.phase == "Running"], 30, what="running pod")
    pid = int(running[0].status.container_statuses[0].container_id.split("//")[1])
    assert pid_alive(pid)
    batch.delete_namespaced_job("long", namespace, propagation_policy="Background")
    wait_until(lambda: not pod_of_job(core, namespace, "long"), 60, what="pods to be garbage-collected")
    wait_until(lambda: not pid_alive(pid), 10, what=f"process {pid} to be gone")


def test_termination_message_and_fallback_to_logs(core, namespace):
    core.create_namespaced_pod(
        namespace,
        pod(
            "msg",
            "",
            containers=[
                {
                    "name": "main",
                    "image": PY,
                    "terminationMessagePath": "/tmp/result/summary.json",
                    "command": ["python", "-c", "import json; json.dump({'mAP50': 0.5}, open('/tmp/result/summary.json', 'w'))"],
                }
            ],
        ),
    )
    core.create_namespaced_pod(
        namespace,
        pod(
            "fallback",
            "",
            containers=[
                {
                    "name": "main",
                    "image": PY,
                    "terminationMessagePolicy": "FallbackToLogsOnError",
                    "command": ["python", "-c", "import sys; print('dataset not found: s3://x/y'); sys.exit(2)"],
                }
            ],
        ),
    )
    st = wait_until(lambda: terminated(core, namespace, "msg"), 30, what="msg pod")
    assert json.loads(st.message) == {"mAP50": 0.5}
    st = wait_until(lambda: terminated(core, namespace, "fallback"), 30, what="fallback pod")
    assert st.exit_code == 2 and "dataset not found: s3://x/y" in st.message


def test_env_volumes_and_service_account_token(core, namespace):
    core.create_namespaced_secret(
        namespace, {"metadata": {"name": "creds"}, "stringData": {"access-key": "AKIA-LOCAL", "cfg.json": '{"a": 1}'}}
    )
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "settings"}, "data": {"MODE": "fast", "recipe.yaml": "epochs: 3\n"}})
    script = r"""
        import json, os, socket
        from kubernetes import client, config
        config.load_incluster_config()  # the projected ServiceAccount token + ca.crt at the standard path
        review = client.AuthenticationV1Api().create_self_subject_review({"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"})
        open('/shared/out', 'w').write('x')
        result = {
            "key": os.environ["ACCESS_KEY"], "mode": os.environ["MODE"], "pod": os.environ["POD_NAME"],
            "secret_file": json.load(open('/etc/creds/cfg.json')), "recipe": open('/etc/settings/recipe.yaml').read(),
            "labels": open('/etc/podinfo/labels').read(), "user": review.status.user_info.username,
            "hostname": socket.gethostname(), "shared": os.listdir('/shared'),
            "ro_secret": not os.access('/etc/creds', os.W_OK),
        }
        open('/dev/termination-log', 'w').write(json.dumps(result))
    """
    spec = pod("envvol", script)
    spec["metadata"]["labels"] = {"app": "envvol"}
    c = spec["spec"]["containers"][0]
    c["env"] = [
        {"name": "ACCESS_KEY", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "access-key"}}},
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
    ]
    c["envFrom"] = [{"configMapRef": {"name": "settings"}}]
    c["volumeMounts"] = [
        {"name": "creds", "mountPath": "/etc/creds", "readOnly": True},
        {"name": "settings", "mountPath": "/etc/settings"},
        {"name": "podinfo", "mountPath": "/etc/podinfo"},
        {"name": "shared", "mountPath": "/shared"},
    ]
    spec["spec"]["volumes"] = [
        {"name": "creds", "secret": {"secretName": "creds"}},
        {"name": "settings", "configMap": {"name": "settings"}},
        {"name": "podinfo", "downwardAPI": {"items": [{"path": "labels", "fieldRef": {"fieldPath": "metadata.labels['app']"}}]}},
        {"name": "shared", "emptyDir": {"medium": "Memory"}},
    ]
    core.create_namespaced_pod(namespace, spec)
    st = wait_until(lambda: terminated(core, namespace, "envvol"), 60, what="envvol pod")
    assert st.exit_code == 0, st.message
    out = json.loads(st.message)
    assert out["key"] == "AKIA-LOCAL" and out["mode"] == "fast" and out["pod"] == "envvol"
    assert out["secret_file"] == {"a": 1} and out["recipe"] == "epochs: 3\n" and out["labels"] == "envvol"
    assert out["user"] == f"system:serviceaccount:{namespace}:default"
    assert out["hostname"] == "envvol" and out["shared"] == ["out"] and out["ro_secret"] is True


def test_read_only_root_filesystem_is_enforced(core, namespace):
    script = """
        import json, os
        def writable(p):
            try:
                open(p, 'w').close(); return True
            except OSError:
                return False
        open('/dev/termination-log', 'w').write(json.dumps({'root': writable('/opt-rootfs-probe'), 'tmp': writable('/tmp/x'), 'scratch': writable('/scratch/x')}))
    """
    spec = pod("ro", script)
    spec["spec"]["containers"][0]["securityContext"] = {
        "readOnlyRootFilesystem": True,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
    }
    spec["spec"]["containers"][0]["volumeMounts"] = [{"name": "scratch", "mountPath": "/scratch"}]
    spec["spec"]["volumes"] = [{"name": "scratch", "emptyDir": {}}]
    core.create_namespaced_pod(namespace, spec)
    st = wait_until(lambda: terminated(core, namespace, "ro"), 30, what="ro pod")
    assert json.loads(st.message) == {"root": False, "tmp": True, "scratch": True}
    assert not os.path.exists("/opt-rootfs-probe")


def test_restart_on_failure_restarts_in_place(core, namespace):
    script = """
        import os, sys
        marker = '/data/attempted'
        if not os.path.exists(marker):
            open(marker, 'w').close(); sys.exit(5)
    """
    spec = pod("retry", script, restartPolicy="OnFailure")
    spec["spec"]["containers"][0]["volumeMounts"] = [{"name": "work", "mountPath": "/data"}]
    spec["spec"]["volumes"] = [{"name": "work", "emptyDir": {}}]
    core.create_namespaced_pod(namespace, spec)
    wait_until(lambda: core.read_namespaced_pod("retry", namespace).status.phase == "Succeeded", 30, what="retry pod to succeed")
    cs = core.read_namespaced_pod("retry", namespace).status.container_statuses[0]
    assert cs.restart_count == 1
    assert cs.last_state.terminated.exit_code == 5


@pytest.mark.parametrize("fault,reason", [("oom", "OOMKilled"), ("kill", "Error"), ("exit137", "OOMKilled")])
def test_fault_injection_kill_and_oom(core, namespace, fault, reason):
    script = "import sys, time; sys.exit(137)" if fault == "exit137" else "import time; time.sleep(600)"
    core.create_namespaced_pod(namespace, pod("victim", script))
    if fault != "exit137":
        wait_until(lambda: core.read_namespaced_pod("victim", namespace).status.phase == "Running", 30, what="running")
        (faults.oom_kill_container if fault == "oom" else faults.kill_container)(core, namespace, "victim")
    st = wait_until(lambda: terminated(core, namespace, "victim"), 30, what="victim to die")
    assert (st.exit_code, st.reason) == (137, reason)
    assert core.read_namespaced_pod("victim", namespace).status.phase == "Failed"


def test_graceful_deletion_sigterm_then_sigkill(core, namespace):
    polite = """
        import signal, sys, time
        signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
        time.sleep(600)
    """
    stubborn = """
        import signal, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        time.sleep(600)
    """
    core.create_namespaced_pod(namespace, pod("polite", polite, terminationGracePeriodSeconds=30))
    core.create_namespaced_pod(namespace, pod("stubborn", stubborn, terminationGracePeriodSeconds=2))
    for name in ("polite", "stubborn"):
        wait_until(lambda name=name: core.read_namespaced_pod(name, namespace).status.phase == "Running", 30, what=f"{name} running")
    pids = {
        n: int(core.read_namespaced_pod(n, namespace).status.container_statuses[0].container_id.split("//")[1])
        for n in ("polite", "stubborn")
    }
    t0 = time.monotonic()
    core.delete_namespaced_pod("polite", namespace)
    core.delete_namespaced_pod("stubborn", namespace)

    def gone(name):
        try:
            core.read_namespaced_pod(name, namespace)
            return False
        except client.ApiException as e:
            return e.status == 404

    wait_until(lambda: gone("polite"), 20, what="polite pod deleted")
    assert time.monotonic() - t0 < 15  # it exited on SIGTERM, long before its 30 s grace period
    wait_until(lambda: gone("stubborn"), 20, what="stubborn pod deleted")
    assert time.monotonic() - t0 >= 2  # it was only SIGKILLed once its 2 s grace had passed
    assert not any(pid_alive(p) for p in pids.values())


def test_node_loss_marks_node_not_ready_and_taints_it(core, namespace):
    node = "cpu-node-1"
    core.create_namespaced_pod(namespace, pod("onlost", "import time; time.sleep(600)", nodeName=node))
    wait_until(lambda: core.read_namespaced_pod("onlost", namespace).status.phase == "Running", 30, what="running")
    pid = int(core.read_namespaced_pod("onlost", namespace).status.container_statuses[0].container_id.split("//")[1])
    faults.lose_node(core, node)
    try:

        def ready_status():
            conds = core.read_node(node).status.conditions
            return next(c.status for c in conds if c.type == "Ready")

        wait_until(lambda: ready_status() in ("False", "Unknown"), 30, what="node NotReady")
        wait_until(lambda: not pid_alive(pid), 10, what="the lost node's processes to die")
        taints = wait_until(
            lambda: [t.key for t in core.read_node(node).spec.taints or [] if t.key.startswith("node.kubernetes.io/")],
            60,
            what="node lifecycle taint",
        )
        assert set(taints) & {"node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"}
    finally:
        faults.restore_node(core, node)
    wait_until(lambda: ready_status() == "True", 30, what="node Ready again")
    wait_until(
        lambda: not [t for t in core.read_node(node).spec.taints or [] if t.key.startswith("node.kubernetes.io/")],
        60,
        what="taints removed after recovery",
    )


def test_kubectl_apply_get_and_helm_version(cluster, namespace):
    manifest = json.dumps({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "via-kubectl"}, "data": {"k": "v"}})
    out = kubectl(cluster.kubeconfig, "apply", "-n", namespace, "-f", "-", input=manifest)
    assert "configmap/via-kubectl created" in out.stdout
    got = kubectl(cluster.kubeconfig, "get", "configmap", "via-kubectl", "-n", namespace, "-o", "jsonpath={.data.k}")
    assert got.stdout == "v"
    nodes = kubectl(cluster.kubeconfig, "get", "nodes", "-o", "name").stdout.split()
    assert {"node/gpu-node-0", "node/cpu-node-0"} <= set(nodes)
    version = kubectl(cluster.kubeconfig, "version", "-o", "json")
    assert json.loads(version.stdout)["serverVersion"]["gitVersion"] == "v1.34.4"
    from localcluster.testing import helm

    assert "v4.1.4" in helm(cluster.kubeconfig, "version", "--short").stdout


def test_s3_round_trip_through_endpoint(cluster):
    from localcluster import s3

    s3.create_bucket(cluster.s3_endpoint, "roundtrip")
    c = s3.client(cluster.s3_endpoint)
    body = os.urandom(6 * 1024 * 1024)  # above the multipart threshold
    c.upload_fileobj(io.BytesIO(body), "roundtrip", "models/model.onnx")
    got = io.BytesIO()
    c.download_fileobj("roundtrip", "models/model.onnx", got)
    assert got.getvalue() == body
    keys = [o["Key"] for o in c.list_objects_v2(Bucket="roundtrip", Prefix="models/")["Contents"]]
    assert keys == ["models/model.onnx"]
    assert cluster.s3_endpoint.startswith("http://127.0.0.1:")  # reached only over HTTP, like MinIO/AWS


def test_volume_over_the_runtimes_parent_keeps_the_runtime_visible(core, namespace):
    import sys

    import localcluster

    repo = os.path.dirname(os.path.dirname(os.path.abspath(localcluster.__file__)))
    parent = os.path.dirname(repo)  # the folder that holds the repo and its venv
    script = f"""
        import os, sys
        open(os.path.join({parent!r}, 'written-in-volume'), 'w').close()
        open('/dev/termination-log', 'w').write(sys.executable)
    """
    spec = pod("over-runtime", script)
    spec["spec"]["containers"][0]["volumeMounts"] = [{"name": "v", "mountPath": parent}]
    spec["spec"]["volumes"] = [{"name": "v", "emptyDir": {}}]
    core.create_namespaced_pod(namespace, spec)
    st = wait_until(lambda: terminated(core, namespace, "over-runtime"), 30, what="pod to finish")
    assert st.exit_code == 0 and st.message.startswith(sys.prefix)
    assert not os.path.exists(os.path.join(parent, "written-in-volume"))  # it went to the volume


def test_killing_a_container_kills_processes_that_left_its_process_group(core, namespace):
    """torchrun starts its workers in sessions of their own; a kill must still reach them."""
    script = """
        import os, subprocess, sys, time
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True)
        open('/tmp/child.pid', 'w').write(str(child.pid))
        print("CHILD", child.pid, flush=True)
        time.sleep(600)
    """
    core.create_namespaced_pod(namespace, pod("tree", script))
    wait_until(lambda: core.read_namespaced_pod("tree", namespace).status.phase == "Running", 30, what="running")
    parent = int(core.read_namespaced_pod("tree", namespace).status.container_statuses[0].container_id.split("//")[1])
    from localcluster.pod_worker import descendants

    kids = wait_until(
        lambda: [
            p
            for p in descendants(parent)
            if p != parent and len(descendants(p)) == 0 and pid_alive(p) and os.getsid(p) != os.getsid(parent)
        ],
        20,
        what="the child in its own session",
    )
    faults.kill_container(core, namespace, "tree")
    wait_until(lambda: terminated(core, namespace, "tree"), 30, what="container killed")
    wait_until(lambda: not any(pid_alive(k) for k in kids), 10, what="the escaped child to be killed too")
