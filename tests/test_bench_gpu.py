"""benchmarks/gpu.py without a GPU: its arithmetic, its one line and exit where CUDA is missing, flex_attention's MSC
against the dense reference, and every section at tiny sizes on the CPU; with CUDA (``gpu``), the kernels it times."""

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from gridit_core.models.cost import full_attention_macs, msc_attention_macs, total
from gridit_core.models.msc import MSCAttention
from gridit_core.models.video import FullAttention

pytestmark = pytest.mark.unit

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu.py"


@pytest.fixture(scope="module")
def gpu():
    spec = importlib.util.spec_from_file_location("bench_gpu", SCRIPT)  # a script, not part of the package
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_peaks_by_device_name_and_utilisation(gpu):
    names = {"NVIDIA H100 80GB HBM3": 989, "NVIDIA H100 PCIe": 756, "NVIDIA H100 NVL": 835, "NVIDIA H200": 989,
             "NVIDIA A100-SXM4-80GB": 312, "NVIDIA A100-PCIE-40GB": 312, "NVIDIA L40S": 362, "NVIDIA L4": 121,
             "NVIDIA GH200 480GB": 989, "NVIDIA A10G": None, "NVIDIA GeForce RTX 4090": None, "cpu": None}  # fmt: skip
    assert {name: gpu.peak_tflops(name) for name in names} == names
    tflops, share = gpu.achieved(3.956e14, 0.5, 989)
    assert tflops == pytest.approx(791.2, rel=1e-12) and share == pytest.approx(0.8, rel=1e-12)
    assert gpu.achieved(1e12, 2.0, None) == (0.5, None)


def test_without_cuda_it_says_so_and_leaves_the_report(gpu, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "gpu.json"
    out.write_text('{"device": {"name": "NVIDIA H100 80GB HBM3"}}\n')  # a report from a GPU run
    assert gpu.main(["--out", str(out)]) is None
    assert capsys.readouterr().out == f"CUDA is not available: nothing measured, {out} left as it is\n"
    assert json.loads(out.read_text()) == {"device": {"name": "NVIDIA H100 80GB HBM3"}}
    assert not out.with_suffix(".png").exists()
    with pytest.raises(SystemExit):  # a CPU run never writes the GPU report
        gpu.main(["--device", "cpu"])


@pytest.mark.parametrize("grid,kw", [((4, 4), {}), ((4, 6), {"window": 5, "p_frames": 2, "i_stride": 3, "i_frames": 1}),
                                     ((6, 6), {"pool": 3, "light_cone": True, "p_frames": 2})])  # fmt: skip
def test_flex_msc_equals_the_dense_reference(gpu, grid, kw):
    settings = {**gpu.MSC, "light_cone": False, **kw}
    torch.manual_seed(0)
    attn = MSCAttention(48, 4, high_heads=2, **settings).double()
    x = torch.randn(1, 7, grid[0] * grid[1], 48, dtype=torch.float64)
    with torch.no_grad():
        want = attn(x, grid, torch.arange(7), reference=True)
        assert torch.allclose(gpu.flex_msc(attn, x, grid), want, atol=1e-10, rtol=0)


@pytest.mark.slow
def test_every_section_runs_at_tiny_sizes_on_the_cpu(gpu, tmp_path):
    out = tmp_path / "gpu.json"
    report = gpu.main(["--device", "cpu", "--out", str(out)])
    assert json.loads(out.read_text()) == report and out.with_suffix(".png").stat().st_size > 1000
    assert report["device"]["name"] == "cpu" and report["tests"] == {"skipped": "not on CUDA"}
    assert not [r for section in ("training", "attention", "sampling") for r in report[section] if "error" in r]
    assert [(r["family"], r["size"]) for r in report["training"]] == [("grid", "DiT-N/2"), ("tensor", "DiT-N/2"),
                                                                      ("msc", "DiT-N/2")]  # fmt: skip
    for row in report["training"]:  # the CPU has no peak in the table: TFLOP/s, but no utilisation
        assert row["flops_per_step"] > 0 and row["tflops"] > 0 and row["utilisation"] is None
        assert row["tokens_per_sample"] == 64 and row["peak_memory_mib"] is None
    attention = {(r["variant"], r["tokens"]): r for r in report["attention"]}
    assert set(attention) == {(v, n) for v in ("sdpa_full", "msc_flex", "msc_library") for n in (64, 128)}
    assert attention[("sdpa_full", 128)]["macs"] == total(full_attention_macs(8, (4, 4), 128))
    assert attention[("msc_library", 128)]["macs"] == total(msc_attention_macs(8, (4, 4), 128, 4, gate="equal"))
    assert "train_s" not in attention[("msc_flex", 64)] and "train_s" in attention[("msc_library", 64)]
    assert attention[("msc_flex", 64)]["relative_difference_to_library"] < 0.02  # bf16
    made = [(r["family"], r["px"]) for r in report["sampling"]]
    assert made == [(family, px) for px in (16, 32) for family in gpu.FAMILY_NAMES]
    assert all(r["frames_per_s"] > 0 for r in report["sampling"])
    again = gpu.main(["--device", "cpu", "--only", "tests", "--out", str(out)])  # one section into the same report
    assert again["training"] == report["training"] and [u["command"] for u in again["updated"]] == [
        "python benchmarks/gpu.py --device cpu --only tests"]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_flex_msc_on_cuda_equals_the_library_kernels(gpu):
    torch.manual_seed(0)
    attn = MSCAttention(64, 4, high_heads=2, light_cone=False, **gpu.MSC).cuda()
    grid, x = (16, 16), torch.randn(1, 6, 256, 64, device="cuda")
    with torch.no_grad():
        want = attn(x, grid, torch.arange(6, device="cuda"))
        got = gpu.flex_msc(attn, x, grid)  # compiled flex_attention
    assert (got - want).abs().max() <= 1e-3 * want.abs().max()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_flop_counter_sees_the_cuda_kernels_as_the_cost_model_counts():
    from torch.utils.flop_counter import FlopCounterMode

    layer, x = FullAttention(128, 4).cuda().bfloat16(), torch.randn(1, 8, 64, 128, device="cuda", dtype=torch.bfloat16)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        layer(x)  # a fused SDPA kernel (flash, cuDNN or memory-efficient), counted by its shapes
    assert counter.get_total_flops() == 2 * total(full_attention_macs(8, (8, 8), 128))
