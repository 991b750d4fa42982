"""benchmarks/codecs.py at toy size: the table's numbers are the codec's real sizes and bounds."""

import argparse
import json

from benchmarks import codecs as bench


def _run(capsys, *argv):
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    # --system-malloc: the bench would otherwise switch this pytest process's malloc policy for good
    assert bench.run(parser.parse_args([*argv, "--system-malloc"])) == 0
    return capsys.readouterr().out


def test_json_rows_hold_configs_baselines_and_bounds(capsys):
    out = _run(capsys, "--elements", "65536", "--repeats", "1", "--kinds", "gaussian,transformer",
               "--only", "b4,top0.1 b4 tensor ans", "--json")
    rows = json.loads(out)["rows"]
    assert json.loads(out)["malloc"] == "glibc default"
    names = [(r["config"], r["tensor"]) for r in rows]
    assert ("b4", "gaussian") in names and ("top0.1 b4 tensor ans", "transformer") in names
    assert {"base fp16 cast", "base torch int8", "base torch.topk 0.1", "base zstd-1 fp32"} <= {r["config"] for r in rows}
    b4 = next(r for r in rows if r["config"] == "b4")
    assert abs(b4["bits_per_element"] - (4 + 48 / 64 + 8 * 80 / 65536)) < 0.01  # values + scales + header
    assert b4["bound_bits_per_element"] <= 4.75 and b4["ratio"] > 6.5
    ans = next(r for r in rows if r["config"] == "top0.1 b4 tensor ans")
    assert ans["bits_per_element"] <= 1.05 * ans["bound_bits_per_element"] + 8 * 200 / 65536
    topk = next(r for r in rows if r["config"] == "base torch.topk 0.1")
    assert abs(topk["bits_per_element"] - 9.6) < 0.01  # fp32 value + int64 index per kept tenth


def test_table_prints_a_header_and_one_line_per_row(capsys):
    out = _run(capsys, "--elements", "8192", "--repeats", "1", "--kinds", "heavy", "--only", "fp16")
    lines = out.strip().splitlines()
    assert lines[1].split()[:3] == ["config", "tensor", "bits/el"]
    assert len(lines) == 3 + 1 + 4  # title, header, rule, fp16, four baselines


def test_tensor_kinds_have_their_shapes_and_tails():
    transformer = bench.make_tensor("transformer", 4096 * 8)
    assert transformer.shape == (8, 4096)
    assert transformer.abs().amax(0).max() > 20 * transformer.std(0).median()
    heavy = bench.make_tensor("heavy", 100_000)
    assert heavy.abs().max() > 50  # Student-t with 2 degrees of freedom
    relu = bench.make_tensor("relu", 100_000)
    assert relu.min() == 0 and 0.48 < float((relu == 0).float().mean()) < 0.52


def test_cuda_without_a_gpu_says_so(capsys):
    import pytest
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    assert bench.run(parser.parse_args(["--device", "cuda", "--system-malloc"])) == 1
    assert "no CUDA device here" in capsys.readouterr().out
