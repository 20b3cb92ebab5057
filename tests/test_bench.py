"""The benchmarks' own arithmetic (their runs are ``make bench``)."""

from __future__ import annotations

from portrait.bench.cluster import _median_round


def test_the_cluster_bench_shows_the_round_with_the_median_ratio() -> None:
    rounds = [
        {
            "cluster_vs_standalone_script_time": r,
            "cluster_vs_standalone_redis_cpu": c,
            "lossless": ok,
            "script_us_per_event": {"standalone": 100.0, "cluster": 100.0 * r},
        }
        for r, c, ok in ((1.9, 2.5, True), (1.4, 2.0, True), (1.6, 2.2, False))
    ]
    shown = _median_round(rounds)
    assert shown["cluster_vs_standalone_script_time"] == 1.6
    assert shown["cluster_vs_standalone_redis_cpu"] == 2.2  # the median round's own figures
    assert shown["round_script_time_ratios"] == [1.9, 1.4, 1.6] and shown["rounds"] == 3
    assert shown["lossless"] is False  # every round must be
    assert shown["round_script_us_per_event"][1] == [100.0, 140.0]
