"""bench/gpu_summary.py, the assembler of bench/gpu_check.sh's JSON, on a hand-written JUnit file and
benchmark output: the part of the GPU check that can be checked without a GPU."""
import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("gpu_summary", ROOT / "bench" / "gpu_summary.py")
gpu_summary = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gpu_summary)

JUNIT = """<?xml version="1.0" encoding="utf-8"?>
<testsuites><testsuite name="pytest" errors="1" failures="1" skipped="1" tests="5">
<testcase classname="tests.test_cuda" name="test_yolox_mixed_precision_training_step[fp16]" time="2.1"/>
<testcase classname="tests.test_cuda" name="test_loaders_pin_memory_on_cuda" time="0.5"/>
<testcase classname="tests.test_cuda" name="test_yolox_inductor_training_matches_eager" time="60">
<failure message="AssertionError: (12.5, 12.0)&#10;assert 0.5 &lt;= 0.012">long traceback</failure></testcase>
<testcase classname="tests.test_cuda" name="test_single_process_nccl_ddp_training_step" time="0.1">
<error message="failed on setup with &quot;RuntimeError: NCCL error&quot;">trace</error></testcase>
<testcase classname="tests.test_cuda" name="test_ssd_mixed_precision_training_step[bf16]" time="0">
<skipped type="pytest.skip" message="Tesla V100 has no bf16 support (needs Ampere or later)">x</skipped></testcase>
</testsuite></testsuites>
"""


def write(path, text):
    path.write_text(text)
    return str(path)


def test_summary_counts_names_and_bench_rows(tmp_path):
    junit = write(tmp_path / "junit.xml", JUNIT)
    rows = [{"bench": "matmul", "fp32_gflops": 50000.0}, {"bench": "yolox_step", "mode": "fp16", "step_s": 0.05}]
    yolox_out = write(tmp_path / "y.out", "$ some log line\n" + "\n".join(json.dumps(r) for r in rows) + "\n")
    yolox_err = write(tmp_path / "y.err", "warning only\n")
    ssd_out = write(tmp_path / "s.out", json.dumps({"bench": "ssd_machine"}) + "\n")
    ssd_err = write(tmp_path / "s.err", "Traceback (most recent call last):\nRuntimeError: CUDA out of memory\n")
    summary = gpu_summary.summarize(junit, 1, [("yolox_step", yolox_out, yolox_err, "0"),
                                               ("ssd_step", ssd_out, ssd_err, "1")],
                                    gpu="Tesla V100", torch_version="2.14.1", cuda_version="13.0")
    tests = summary["tests"]
    assert (tests["passed"], tests["failed"], tests["errors"], tests["skipped"]) == (2, 1, 1, 1)
    assert [f["test"] for f in tests["failures"]] == [
        "tests.test_cuda::test_yolox_inductor_training_matches_eager",
        "tests.test_cuda::test_single_process_nccl_ddp_training_step"]
    assert tests["failures"][0] == {"test": "tests.test_cuda::test_yolox_inductor_training_matches_eager",
                                    "kind": "failure", "message": "AssertionError: (12.5, 12.0)"}
    assert tests["skips"][0]["reason"].startswith("Tesla V100 has no bf16")
    yolox, ssd = summary["benchmarks"]
    assert yolox == {"name": "yolox_step", "exit_code": 0, "rows": rows}
    assert ssd["exit_code"] == 1 and ssd["stderr_tail"][-1] == "RuntimeError: CUDA out of memory"
    assert summary["ok"] is False and summary["gpu"] == "Tesla V100" and summary["cuda"] == "13.0"
    line = gpu_summary.one_line(summary)
    assert line.startswith("gpu_check: FAILED on Tesla V100: CUDA tests 2 passed, 2 failed, 1 skipped")
    assert line.endswith("benchmarks failed: ssd_step (exit 1)")
    json.dumps(summary)      # the whole summary is JSON


def test_all_passed_is_ok_and_main_writes_the_file(tmp_path):
    junit = write(tmp_path / "junit.xml", '<testsuite><testcase classname="t" name="a"/>'
                                          '<testcase classname="t" name="b"><skipped message="no bf16"/></testcase>'
                                          '</testsuite>')
    out_file = write(tmp_path / "b.out", json.dumps({"bench": "ssd_step", "step_s": 0.1}) + "\n")
    err_file = write(tmp_path / "b.err", "")
    target = tmp_path / "sub" / "gpu_check.json"
    rc = gpu_summary.main(["--out", str(target), "--junit", junit, "--pytest-rc", "0",
                           "--bench", "ssd_step", out_file, err_file, "0"])
    summary = json.loads(target.read_text())
    assert rc == 0 and summary["ok"] is True
    assert summary["tests"]["passed"] == 1 and summary["tests"]["skipped"] == 1
    assert summary["benchmarks"][0]["rows"] == [{"bench": "ssd_step", "step_s": 0.1}]
    assert "stderr_tail" not in summary["benchmarks"][0]


def test_missing_junit_is_a_failure_not_zero_tests(tmp_path):
    summary = gpu_summary.summarize(tmp_path / "absent.xml", 2, [], gpu=None, torch_version="x")
    assert summary["ok"] is False and "no JUnit file" in summary["tests"]["missing"]
