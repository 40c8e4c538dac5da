"""The operator's cache (pure): newest copy wins, own writes are seen at once, a relist drops
what is gone but keeps what appeared after its snapshot, a namesake's Jobs are not ours."""

from __future__ import annotations

from sparsify_operator.api import GROUP, KIND, LABEL_JOB, PLURAL, VERSION
from sparsify_operator.cache import Cache, Change


def sj(name="demo", rv=10, uid="sj-uid", phase=None):
    return {
        "metadata": {"name": name, "namespace": "ml", "uid": uid, "resourceVersion": str(rv)},
        "status": {"phase": phase} if phase else {},
    }


def job(name, rv, owner="demo", owner_uid="sj-uid", uid=None):
    return {
        "metadata": {
            "name": name,
            "namespace": "ml",
            "uid": uid or f"uid-{name}",
            "resourceVersion": str(rv),
            "labels": {LABEL_JOB: owner},
            "ownerReferences": [{"uid": owner_uid}],
        }
    }


def test_an_older_copy_never_replaces_a_newer_one():
    c = Cache()
    c.put_sparsifyjob(sj(rv=12, phase="Training"))  # our own status patch's answer
    c.put_sparsifyjob(sj(rv=11, phase="Validating"))  # a watch event from before it, delivered late
    assert c.sparsifyjob("ml", "demo")["status"]["phase"] == "Training"
    c.put_sparsifyjob(sj(rv=13, phase="Exporting"))
    assert c.sparsifyjob("ml", "demo")["status"]["phase"] == "Exporting"


def test_jobs_are_found_by_owner_and_a_namesakes_are_not_ours():
    c = Cache()
    c.put_job(job("demo-validate", 5))
    c.put_job(job("demo-train", 6, owner_uid="old-uid"))  # left by a deleted SparsifyJob of the same name
    c.put_job(job("other-validate", 7, owner="other"))
    assert [j["metadata"]["name"] for j in c.jobs_of(sj())] == ["demo-validate"]
    c.forget_job(job("demo-validate", 8))
    assert c.jobs_of(sj()) == []


def test_relist_forgets_what_is_gone_and_keeps_what_came_after_its_snapshot():
    c = Cache()
    c.put_sparsifyjob(sj("gone", rv=3, uid="g"))
    c.put_job(job("demo-validate", 20))
    c.put_job(job("demo-train", 31))  # created by this operator after the list was taken
    c.put_job(job("deleted-validate", 4, owner="deleted"))
    c.put_finished_pods("uid-deleted-validate", [{"metadata": {}}])
    c.replace([sj(rv=25)], [job("demo-validate", 22)], snapshot=30)
    assert c.sparsifyjob("ml", "gone") is None and c.sparsifyjob("ml", "demo")["metadata"]["resourceVersion"] == "25"
    assert sorted(j["metadata"]["name"] for j in c.jobs_of(sj())) == ["demo-train", "demo-validate"]
    assert c.jobs_of(sj("deleted")) == [] and c.finished_pods("uid-deleted-validate") is None
    # a relist older than what a watch already delivered does not roll it back
    c.put_job(job("demo-validate", 40))
    c.replace([sj(rv=25)], [job("demo-validate", 22), job("demo-train", 31)], snapshot=35)
    v = next(j for j in c.jobs_of(sj()) if j["metadata"]["name"] == "demo-validate")
    assert v["metadata"]["resourceVersion"] == "40"


def test_a_recreated_object_replaces_the_old_one_even_with_a_lower_version():
    c = Cache()
    c.put_job(job("demo-validate", 50, uid="first"))
    c.replace([sj()], [job("demo-validate", 45, uid="second")], snapshot=None)
    assert c.jobs_of(sj())[0]["metadata"]["uid"] == "second"


def test_finished_pods_are_kept_slim_but_observe_reads_the_same():
    from sparsify_operator.observe import observe_attempt
    from tests.support.objects import job as stage_job
    from tests.support.objects import pod

    failed = stage_job("train", state="Failed", reason="PodFailurePolicy", batch=64)
    pods = [pod("Failed", exit_code=137, reason="OOMKilled", message='{"stage": "train"}', index=0)]
    pods[0]["metadata"]["managedFields"] = [{"manager": "kubelet"}] * 50
    pods[0]["spec"] = {"containers": [{"name": "train", "env": [{"name": "X", "value": "y" * 1000}]}]}
    c = Cache()
    c.put_finished_pods("uid-train", pods)
    kept = c.finished_pods("uid-train")
    assert "spec" not in kept[0] and "managedFields" not in kept[0]["metadata"]
    assert observe_attempt(failed, kept) == observe_attempt(failed, pods)
    assert observe_attempt(failed, kept).reason == "OOMKilled"
    c.put_job({**job("demo-train", 9), "metadata": {**job("demo-train", 9)["metadata"], "managedFields": [{}]}})
    assert "managedFields" not in c.jobs_of(sj())[0]["metadata"]


def test_relists_come_in_pages_and_keep_the_first_pages_snapshot():
    import json as _json
    from types import SimpleNamespace

    from sparsify_operator.kube import PAGE, Kube

    pages = {
        None: {"metadata": {"resourceVersion": "41", "continue": "p2"}, "items": [{"n": 1}, {"n": 2}]},
        "p2": {"metadata": {"resourceVersion": "41", "continue": "p3"}, "items": [{"n": 3}]},
        "p3": {"metadata": {"resourceVersion": "41"}, "items": [{"n": 4}]},
    }
    asked = []

    def list_call(namespace, limit, _continue, **kwargs):  # the shape of a kubernetes-client list call
        asked.append((namespace, limit, _continue, kwargs.get("label_selector")))
        return SimpleNamespace(data=_json.dumps(pages[_continue]))

    out = Kube.__new__(Kube)._paged(list_call, "ml", label_selector="a=b")
    assert [i["n"] for i in out["items"]] == [1, 2, 3, 4] and out["metadata"]["resourceVersion"] == "41"
    assert asked == [("ml", PAGE, None, "a=b"), ("ml", PAGE, "p2", "a=b"), ("ml", PAGE, "p3", "a=b")]

    # what is kept of each item is decided page by page: dropped items and cut fields never pile up
    seen_per_page = []

    def keep(item):
        seen_per_page.append(len(asked))
        return None if item["n"] % 2 else {"n": item["n"], "kept": True}

    asked.clear()
    out = Kube.__new__(Kube)._paged(list_call, "ml", label_selector="a=b", keep=keep)
    assert out["items"] == [{"n": 2, "kept": True}, {"n": 4, "kept": True}] and out["metadata"]["resourceVersion"] == "41"
    assert seen_per_page == [1, 1, 2, 3]  # each item trimmed right after its own page came


def test_stage_jobs_and_pods_are_watched_with_a_server_side_label_selector_and_sparsifyjobs_without():
    import kopf
    from kopf._cogs.structs.references import Resource

    from sparsify_operator.handlers import configure

    settings = kopf.OperatorSettings()
    configure(settings)
    jobs = Resource(group="batch", version="v1", plural="jobs", kind="Job", singular="job", namespaced=True)
    sjs = Resource(group=GROUP, version=VERSION, plural=PLURAL, kind=KIND, singular="sparsifyjob", namespaced=True)
    pods = Resource(group="", version="v1", plural="pods", kind="Pod", singular="pod", namespaced=True)
    assert list(settings.watching.label_selectors.collect(jobs)) == ["app.kubernetes.io/managed-by=sparsify-operator"]
    assert list(settings.watching.label_selectors.collect(pods)) == ["app.kubernetes.io/managed-by=sparsify-operator"]
    assert list(settings.watching.label_selectors.collect(sjs)) == []


# ---- what a watch event changes (the work queue is told only of real changes) -----------------


def test_an_echo_of_the_operators_own_write_changes_nothing():
    c = Cache()
    assert c.put_sparsifyjob(sj(rv=10)) is Change.NEW
    assert c.put_sparsifyjob(sj(rv=12, phase="Validating")) is Change.CHANGED  # our status patch's answer
    assert c.put_sparsifyjob(sj(rv=12, phase="Validating")) is Change.NONE  # its watch event, later
    assert c.put_sparsifyjob(sj(rv=11)) is Change.NONE  # an older event, later still
    assert c.put_sparsifyjob(sj(rv=5, uid="recreated")) is Change.NEW  # a namesake: a new object
    assert c.put_job(job("demo-validate", 20)) is Change.NEW
    assert c.put_job(job("demo-validate", 20)) is Change.NONE


def test_a_job_that_completes_or_fails_is_said_as_finished_once():
    c = Cache()
    c.put_sparsifyjob(sj())
    running = {**job("demo-validate", 20), "status": {"active": 1}}
    done = {**job("demo-validate", 21), "status": {"conditions": [{"type": "Complete", "status": "True"}], "succeeded": 1}}
    assert c.put_job(running) is Change.NEW
    assert c.put_job(done) is Change.FINISHED
    again = {**done, "metadata": {**done["metadata"], "resourceVersion": "22"}}
    assert c.put_job(again) is Change.CHANGED  # finished before: not first in line again


def test_a_finished_run_is_kept_as_a_stub_without_its_jobs_and_pods():
    c = Cache()
    big = {**sj(rv=10), "spec": {"recipe": {"inline": "x" * 65536}}}
    c.put_sparsifyjob(big)
    c.put_job(job("demo-validate", 11))
    c.put_finished_pods("uid-demo-validate", [{"metadata": {"name": "p"}}])
    assert c.unfinished() == [("ml", "demo")]
    c.put_sparsifyjob({**big, "metadata": {**big["metadata"], "resourceVersion": "30"}, "status": {"phase": "Succeeded", "results": {}}})
    stub = c.sparsifyjob("ml", "demo")
    assert stub["status"] == {"phase": "Succeeded"} and "spec" not in stub
    assert c.jobs_of(sj()) == [] and c.finished_pods("uid-demo-validate") is None and c.unfinished() == []
    assert c.put_job(job("demo-train", 31)) is Change.NONE  # its Jobs' events are not kept either
    assert c.sizes() == {"sparsifyjobs": 1, "jobs": 0, "pods": 0}


def test_jobs_are_kept_slim_and_observe_reads_the_same():
    from sparsify_operator.cache import slim_job
    from sparsify_operator.observe import observe_attempt
    from tests.support.objects import job as stage_job

    full = stage_job("train", state="Failed", reason="PodFailurePolicy", batch=64)
    full["metadata"].update(uid="u", namespace="ml", creationTimestamp="2026-11-29T00:00:00Z", managedFields=[{}] * 20)
    full["spec"] = {"completionMode": "Indexed", "template": {"spec": {"containers": [{"env": [{"value": "y" * 5000}]}]}}}
    kept = slim_job(full)
    assert "template" not in kept["spec"] and "managedFields" not in kept["metadata"]
    assert observe_attempt(kept, []) == observe_attempt(full, [])


def pod_of(job_uid, name="p", rv=1, phase="Pending", waiting=None, owner="demo"):
    state = {"waiting": {"reason": waiting, "message": "m"}} if waiting else {}
    return {
        "metadata": {
            "name": name,
            "namespace": "ml",
            "uid": f"uid-{name}",
            "resourceVersion": str(rv),
            "labels": {LABEL_JOB: owner, "batch.kubernetes.io/controller-uid": job_uid},
        },
        "spec": {"containers": [{"name": "c"}]},
        "status": {"phase": phase, "containerStatuses": [{"name": "c", "state": state, "ready": False}]},
    }


def test_watched_pods_say_a_change_only_where_observe_would_see_one():
    c = Cache()
    c.put_sparsifyjob(sj())
    assert c.put_pod(pod_of("j1", rv=1)) is Change.NEW
    assert c.put_pod(pod_of("j1", rv=2)) is Change.NONE  # a new resourceVersion, nothing observe reads
    assert c.put_pod(pod_of("j1", rv=3, waiting="ContainerCreating")) is Change.NONE  # on its way: nothing to decide
    assert c.put_pod(pod_of("j1", rv=4, waiting="CreateContainerConfigError")) is Change.CHANGED  # stuck: say why
    assert [p["status"]["containerStatuses"][0]["state"]["waiting"]["reason"] for p in c.pods_of("j1")] == ["CreateContainerConfigError"]
    assert c.put_pod(pod_of("j1", rv=5, phase="Running")) is Change.CHANGED  # started
    c.put_finished_pods("j1", [])  # its Job finished: the read at that moment is what counts from now on
    assert c.pods_of("j1") == [] and c.put_pod(pod_of("j1", rv=6, phase="Succeeded")) is Change.NONE
