"""``benchmarks/profile_compare.py``: kernels grouped by category, systems compared per step (issue 17's question:
where does mmpeft's fixed-length step lose time to the compiled peer's)."""

from types import SimpleNamespace

import pytest


@pytest.fixture
def script(benchmark_script):
    return benchmark_script("profile_compare")


@pytest.mark.parametrize("kernel, expected", [
    ("sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize128x128x64", "matmul"),
    ("nvjet_tst_192x192_64x4_1x2_h_bz_coopA_NTN", "matmul"),
    ("void pytorch_flash::flash_fwd_kernel<Flash_fwd_kernel_traits<128, 128>>", "attention"),
    ("triton_poi_fused__to_copy_add_mul_native_dropout_0", "compiled (Triton)"),
    ("void at::native::vectorized_elementwise_kernel<4, at::native::CUDAFunctor_add<c10::BFloat16>>", "eager "
     "elementwise / reductions"),
    ("Memcpy DtoD (Device -> Device)", "copies"),
    ("ncclDevKernel_AllReduce_Sum_f32_RING_LL", "communication"),
    ("triton_tem_fused_addmm_0", "matmul"),
    ("void gemv2T_kernel_val<int, int, float, float, float, float, 128, 16, 4, 4, false>", "matmul"),
    ("some_unknown_kernel", "other"),
])
def test_kernel_categories(script, kernel, expected):
    assert script.category(kernel) == expected


def test_kernel_table_keeps_device_kernels_on_a_gpu(script):
    events = [SimpleNamespace(key="aten::mm", device_type="DeviceType.CPU", self_device_time_total=0.0,
                              self_cpu_time_total=50.0, count=4),
              SimpleNamespace(key="sm90_xmma_gemm", device_type="DeviceType.CUDA", self_device_time_total=900.0,
                              self_cpu_time_total=0.0, count=4),
              SimpleNamespace(key="ProfilerStep*", device_type="DeviceType.CPU", self_device_time_total=0.0,
                              self_cpu_time_total=7.0, count=2),
              # a record_function range on the GPU timeline (Lightning's optimizer step spans the whole step)
              SimpleNamespace(key="Optimizer.step#AdamW.step", device_type="DeviceType.CUDA", is_user_annotation=True,
                              self_device_time_total=5000.0, self_cpu_time_total=0.0, count=2)]
    assert script.kernel_table(events, "cuda") == {"sm90_xmma_gemm": [900.0, 4]}
    assert script.kernel_table(events, "cpu") == {"aten::mm": [50.0, 4]}  # the profiler's own range left out


def test_compare_gives_per_step_milliseconds_and_differences(script):
    peer = {"steps": 2, "kernels": {"gemm_a": [4000.0, 8], "flash_fwd": [1000.0, 2]}}
    ours = {"steps": 2, "kernels": {"gemm_a": [3000.0, 8], "flash_fwd": [1600.0, 2], "triton_poi_x": [400.0, 2]}}
    text = script.compare({"peer": peer, "mmpeft": ours})
    assert "| attention | 0.5 | 0.8 | +0.3 |" in text
    assert "| matmul | 2.0 | 1.5 | -0.5 |" in text
    assert "| compiled (Triton) | 0.0 | 0.2 | +0.2 |" in text
    assert "| total | 2.5 | 2.5 | +0.0 |" in text
    assert [line.startswith("| matmul |") for line in text.splitlines()].count(True) == 1  # two rules, one row
    rows = [line for line in text.splitlines() if line.startswith("| `")]
    assert rows[0].startswith("| `gemm_a` | matmul | -0.50")  # largest absolute difference first


def test_missing_profiles_are_one_clear_error(script, tmp_path):
    with pytest.raises(SystemExit, match=r"no kernel table .*peer\+compile.kernels.json.*--profile DIR"):
        script.load(tmp_path, ["peer+compile"])


def test_a_system_that_raises_leaves_no_profiler_running(tmp_path, benchmark_script):
    """``train_throughput.py --profile``: a system that fails midway (out of memory, a missing kernel) must not
    leave its profiler on, or the next system's cannot start and every later row is lost."""
    import torch

    bench = benchmark_script("train_throughput")
    with pytest.raises(RuntimeError, match="out of memory"):
        with bench.StepProfile(str(tmp_path), 0, "cpu") as profile:
            profile.step()
            raise RuntimeError("CUDA out of memory")
    with bench.StepProfile(str(tmp_path), 0, "cpu") as profile:
        for _ in range(4):  # 1 profiler warm-up step, then the recorded ones
            torch.ones(8, 8) @ torch.ones(8, 8)
            profile.step()
        profile.save("peer+compile")
    assert (tmp_path / "peer_compile.kernels.json").is_file()


def test_device_idle_measures_the_gaps_between_kernels_within_the_steps(script):
    ms = 1_000_000
    spans = [("ProfilerStep#5", False, 0, 10 * ms), ("ProfilerStep#6", False, 10 * ms, 20 * ms),
             ("cudaLaunchKernel", False, 1 * ms, 2 * ms),  # host work: not the device's
             ("gemm_a", True, 2 * ms, 6 * ms), ("triton_b", True, 5 * ms, 7 * ms),  # overlapping: busy 2..7
             ("gemm_a", True, 9 * ms, 18 * ms), ("before_window", True, -3 * ms, -1 * ms)]
    idle = script.device_idle(spans, steps=2)
    assert idle["step_ms"] == 10.0 and idle["busy_ms"] == 7.0 and idle["idle_ms"] == 3.0
    assert idle["gaps"] == [[2.0, "(step start)", "gemm_a"], [2.0, "triton_b", "gemm_a"],
                            [2.0, "gemm_a", "(step end)"]]
    assert script.device_idle([("gemm", True, 0, 5)], steps=1) == {}  # no step ranges: nothing to say
    text = script.compare({"mmpeft": {"steps": 2, "kernels": {"gemm_a": [1.0, 1]}, "idle": idle}})
    assert "| mmpeft | 10.0 | 7.0 | 3.0 |" in text and "| 2.00 | `triton_b` | `gemm_a` |" in text
