"""Quantization streams: a 1B-parameter checkpoint quantizes within 2 GB beyond its packed output."""

from __future__ import annotations

import pytest

from edgekit.quantize.memory_check import measure, write_checkpoint


@pytest.mark.slow
def test_one_billion_parameters_stay_under_two_gigabytes(tmp_path):
    source = tmp_path / "synthetic"
    source.mkdir()
    params = write_checkpoint(source, layers=22)
    assert params > 1_000_000_000
    report = measure(source, tmp_path / "out.edgekit", "ek_t2")
    assert report["peak_rss_bytes"] - report["output_bytes"] < 2 * 1024**3
