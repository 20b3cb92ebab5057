"""The benchmarks' own arithmetic (their runs are ``make bench``)."""

from __future__ import annotations

from cli.bench import Measured
from cli.bench.cluster import _median_round, _one_node
from cli.bench.growth import GrowthRun, _medians, _summary


def test_the_cluster_bench_shows_the_round_with_the_median_ratio() -> None:
    rounds = [
        {
            "cluster_vs_standalone_script_time": r,
            "cluster_vs_standalone_redis_cpu": c,
            "lossless": ok,
            "script_us_per_event": {"standalone": 100.0, "cluster": 100.0 * r},
            # the one-node cluster: 5,000 events in 2 s, scripts 1.2x and CPU 1.3x standalone
            **_one_node(
                Measured("one_node", 5000, 2.0, 5000, 5000), (600e3, 650e3), (500e3, 500e3), 5000
            ),
        }
        for r, c, ok in ((1.9, 2.5, True), (1.4, 2.0, True), (1.6, 2.2, False))
    ]
    shown = _median_round(rounds)
    assert shown["cluster_vs_standalone_script_time"] == 1.6
    assert shown["cluster_vs_standalone_redis_cpu"] == 2.2  # the median round's own figures
    assert shown["round_script_time_ratios"] == [1.9, 1.4, 1.6] and shown["rounds"] == 3
    assert shown["lossless"] is False  # every round must be
    assert shown["round_script_us_per_event"][1] == [100.0, 140.0]
    one = shown["one_node"]
    assert one["vs_standalone_script_time"] == 1.2 and one["vs_standalone_redis_cpu"] == 1.3
    assert one["script_us_per_event"] == 120.0 and one["events_per_second"] == 2500.0
    assert shown["round_one_node_script_time_ratios"] == [1.2, 1.2, 1.2]


def test_the_growth_bench_takes_each_ratio_over_rounds_not_the_ratio_of_medians() -> None:
    def run(fresh_us: float, mature_us: float, rate: float) -> dict[str, GrowthRun]:
        return {
            "chat-fresh": GrowthRun("chat-fresh", 100, 1.0, fresh_us * 100, 2000),
            "chat-mature": GrowthRun("chat-mature", 100, 100 / rate, mature_us * 100, 20000),
            "channel-fresh": GrowthRun("channel-fresh", 100, 1.0, 100 * 100, 3000),
            "channel-mature": GrowthRun("channel-mature", 100, 1.0, 110 * 100, 18000),
        }

    rounds = [
        _summary(run(*figures), 500) for figures in ((100, 200, 50), (300, 390, 90), (200, 240, 80))
    ]
    assert [r["chat_script_ratio"] for r in rounds] == [2.0, 1.3, 1.2]
    shown = _medians(rounds)
    # the median of the rounds' ratios (1.3), not median mature ÷ median fresh (240 ÷ 200)
    assert shown["chat_script_ratio"] == 1.3 and shown["chat_rate_ratio"] == 0.8
    assert shown["runs"]["chat-fresh"]["script_usec_per_event"] == 200
    assert shown["round_ratios"]["chat_script_ratio"] == [2.0, 1.3, 1.2]
    assert shown["channel_script_ratio"] == 1.1 and shown["rounds"] == 3
    assert shown["mature_chat_customer_bytes"] == 20000
