"""The verdicts on a run's result (pure): each failing one names its cause and the fix."""

from sparsify_worker import verdicts


def test_a_partly_native_hardswish_graph_names_the_ops_and_the_fix():
    v = verdicts.native(0.73, {"Conv", "HardSigmoid", "Mul"}, {"avx512": True})
    assert (v["type"], v["ok"], v["reason"]) == ("NativelyRun", False, "PartlyNative")
    assert "only 73%" in v["message"] and "HardSigmoid" in v["message"] and "model.activation: SiLU" in v["message"]
    assert verdicts.native(1.0, {"Conv", "Sigmoid", "Mul"})["ok"] is True
    other = verdicts.native(0.5, {"Conv", "NonMaxSuppression"}, {"avx512": False, "isa": "avx2"})
    assert "NonMaxSuppression" in other["message"] and "no AVX-512 (avx2)" in other["message"]
    assert verdicts.native(None, set())["reason"] == "EngineFailed"


def test_slower_than_dense_is_a_failed_result_with_the_measured_ratio():
    slow = verdicts.speed(120.0, {"deepsparse": 150.0, "onnxruntime": 100.0}, {"vnni": False})
    assert (slow["ok"], slow["reason"]) == (False, "SlowerThanDense")
    assert "0.80x" in slow["message"] and "deepsparse (150.0 img/s)" in slow["message"] and "no VNNI" in slow["message"]
    fast = verdicts.speed(300.0, {"deepsparse": 150.0}, rounds=[1.9, 2.1, 2.0])
    assert fast["ok"] and "2.00x (rounds 1.90-2.10x)" in fast["message"]
    assert verdicts.speed(None, {"deepsparse": 150.0}) is None


def test_accuracy_is_judged_against_the_dense_model_on_the_same_images():
    assert verdicts.accuracy(0.43, 0.5)["ok"] is True
    drop = verdicts.accuracy(0.40, 0.5)
    assert (drop["ok"], drop["reason"]) == (False, "AccuracyDrop") and "80% retained" in drop["message"]
    untrained = verdicts.accuracy(0.6, None, "untrained (the run had no starting weights)")
    assert untrained["reason"] == "NotCompared" and "model.weights" in untrained["message"]
