"""Checks of the statistics bench/report.py judges the latency target with, and of how it treats
runs that lost what the broker acknowledged (run: .venv/bin/pytest bench/test_report.py)."""
import json
import pathlib
import random
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from report import (  # noqa: E402
    clean_rate, distinct, load, open_loop_inflight, open_loop_table, p99_gap, pooled_latency,
    pooled_p99, quantile, repo_relative,
)


def histogram(samples):
    counts = {}
    for value in samples:
        counts[value] = counts.get(value, 0) + 1
    return sorted(counts.items())


def round_of(rng, base, tail, n=2000):
    """A round of n latencies: most near `base`, 2% in a tail near `tail`."""
    return [int(rng.gauss(tail, 5)) if rng.random() < 0.02 else int(rng.gauss(base, 5))
            for _ in range(n)]


def run(histogram_rows, p99):
    return {"label": "x", "lost": 0, "latency_us": {"p99": p99, "histogram": histogram_rows}}


def test_quantile_is_the_smallest_value_covering_the_rank():
    buckets = [(10, 50), (20, 49), (30, 1)]
    assert quantile(buckets, 100, 0.50) == 10
    assert quantile(buckets, 100, 0.99) == 20
    assert quantile(buckets, 100, 1.0) == 30


def test_pooling_weighs_rounds_by_their_messages():
    slow = run([(100, 98), (900, 2)], 900)
    fast = [run([(100, 100)], 100) for _ in range(3)]
    row = pooled_latency([slow] + fast)
    # 2 slow messages in 400: under 1%, so the pooled p99 is the common value.
    assert row["latency_us"]["p99"] == 100
    assert row["pooled_samples"] == 400
    assert sorted(row["p99_rounds"]) == [100, 100, 100, 900]


def gap_of_simulated_rounds(seed, our_tail, their_tail, rounds=12):
    """p99_gap between two brokers of `rounds` simulated rounds each, with the given tails."""
    rng = random.Random(seed)
    ours = [histogram(round_of(rng, 100, our_tail)) for _ in range(rounds)]
    theirs = [histogram(round_of(rng, 100, their_tail)) for _ in range(rounds)]
    gap = p99_gap({"round_histograms": ours}, {"round_histograms": theirs}, resamples=200)
    return gap, pooled_p99(ours) - pooled_p99(theirs)


def test_a_real_gap_gives_an_interval_that_excludes_zero():
    (gap, low, high), measured = gap_of_simulated_rounds(1, 200, 260)
    assert gap == measured
    assert low <= gap <= high
    assert high < 0, (gap, low, high)


def test_the_same_broker_twice_gives_an_interval_around_zero():
    (_, low, high), _ = gap_of_simulated_rounds(2, 220, 220)
    assert low <= 0 <= high, (low, high)


def test_no_interval_without_round_histograms():
    assert p99_gap({}, {"round_histograms": [[(1, 1)]]}) is None


def test_commands_name_paths_relative_to_the_repository():
    root = pathlib.Path("/srv/build/tern")
    line = "taskset -c 0 /srv/build/tern/target/release/tern serve --config bench/tern.toml"
    relative = repo_relative(line, root)
    assert relative == "taskset -c 0 target/release/tern serve --config bench/tern.toml"
    assert "/srv/build" not in relative


def flow(label, scenario, qos, delivered, open_loop=False, lost=0, **extra):
    """A flow report as tern bench writes it (the fields report.py reads)."""
    sent = 1000
    row = {"label": label, "scenario": scenario, "qos": qos, "open_loop": open_loop,
           "sent": sent, "expected": sent, "acknowledged": sent, "delivered_per_s": delivered,
           "acknowledged_per_s": delivered, "lost": lost, "duplicated": 0, "out_of_order": 0,
           "subscribers_closed": 0, "undelivered_at_window_end": 0, "generator_cpu_pct": 50}
    return row | extra


def rows_of(*reports):
    return {(r["label"], r["scenario"] + ("/open" if r["open_loop"] else ""), r["qos"]): r
            for r in reports}


def cells_of(table, prefix):
    """The cells of the table row that starts with `prefix`."""
    line = next(l for l in table.splitlines() if l.startswith("| " + prefix))
    return [c.strip() for c in line.strip("|").split("|")]


def test_open_loop_runs_are_rows_apart_from_closed_loop_runs(tmp_path):
    reports = [flow("tern", "fan-in", 1, 900), flow("tern", "fan-in", 1, 800, open_loop=True)]
    failed = {"label": "tern", "failed": True, "args": "pairs --open-loop --qos 2 --pairs 16"}
    lines = [json.dumps(r) for r in reports] + [json.dumps(failed)]
    (tmp_path / "results.jsonl").write_text("\n".join(lines) + "\n")
    rows = load(tmp_path)
    assert rows[("tern", "fan-in", 1)]["delivered_per_s"] == 900
    assert rows[("tern", "fan-in/open", 1)]["delivered_per_s"] == 800
    assert rows[("tern", "pairs/open", 2)]["failed"]


def test_acknowledged_but_undelivered_is_shown_first_and_earns_no_ratio():
    # Fast at acknowledging, and half of it dropped.
    tern = flow("tern", "fan-in", 1, 850_000, open_loop=True, lost=500,
                acknowledged_per_s=1_900_000)
    rows = rows_of(tern, flow("tern", "fan-in", 1, 900_000),
                   flow("mosquitto", "fan-in", 1, 90_000, open_loop=True))
    assert clean_rate(tern) is None
    brokers = [("mosquitto", "Mosquitto"), ("tern", "Tern")]
    cells = cells_of(open_loop_table(rows, brokers), "fan-in (8 → 1) QoS 1")
    assert cells[1].startswith("90,000/s delivered")
    assert cells[2].startswith("**LOST 500 of 1,000 acknowledged (50%)**")
    # Tern ÷ Mosquitto, Tern ÷ rumqttd, open ÷ closed: none for a run with loss.
    assert cells[3:6] == ["—", "—", "—"]
    assert cells[-1] == "**no**"


def test_a_clean_open_loop_run_meets_the_target_from_90_percent_of_closed_loop():
    brokers = [("tern", "Tern")]
    for open_rate, met in ((900, "yes"), (899, "**no**")):
        rows = rows_of(flow("tern", "pairs", 2, 1000),
                       flow("tern", "pairs", 2, open_rate, open_loop=True))
        cells = cells_of(open_loop_table(rows, brokers), "pairs (16 pairs) QoS 2")
        assert cells[-1] == met, cells
    reordered = rows_of(flow("tern", "pairs", 2, 1000),
                        flow("tern", "pairs", 2, 1000, open_loop=True, out_of_order=3))
    cells = cells_of(open_loop_table(reordered, brokers), "pairs (16 pairs) QoS 2")
    assert "**reordered 3**" in cells[1]
    assert cells[-1] == "**no**"


def test_a_subscriber_cut_off_earns_no_ratio():
    assert clean_rate(flow("x", "fan-out", 1, 10, subscribers_closed=1)) is None
    assert clean_rate(flow("x", "fan-out", 1, 10)) == 10


def test_repeated_commands_are_listed_once_with_their_count():
    commands = ["a --broker-pid 12", "b", "a --broker-pid 13", "b", "b"]
    assert distinct(commands) == ["a --broker-pid PID  # 2 times", "b  # 3 times"]


def test_the_open_loop_target_is_judged_on_tern_with_its_defaults_where_it_ran():
    # With bench/tern.toml's raised queues nothing is lost; with the defaults, half is.
    rows = rows_of(flow("tern", "fan-out", 2, 1000),
                   flow("tern", "fan-out", 2, 1000, open_loop=True),
                   flow("tern-defaults", "fan-out", 2, 950, open_loop=True, lost=500))
    brokers = [("tern", "Tern (durability os)"), ("tern-defaults", "Tern (defaults)")]
    table = open_loop_table(rows, brokers)
    assert "Tern (defaults) open ÷ Tern (durability os) closed loop" in table.splitlines()[0]
    cells = cells_of(table, "fan-out (1 → 16) QoS 2")
    assert cells[1].startswith("1,000/s delivered")
    assert cells[2].startswith("**LOST 500 of 1,000 acknowledged (50%)**")
    assert cells[-1] == "**no**"
    # Without a run with the defaults, the one with bench/tern.toml is judged.
    del rows[("tern-defaults", "fan-out/open", 2)]
    assert cells_of(open_loop_table(rows, brokers[:1]), "fan-out (1 → 16) QoS 2")[-1] == "yes"


def test_the_open_loop_window_is_read_from_the_runs():
    rows = rows_of(flow("tern", "pairs", 1, 10, inflight_max=65535),
                   flow("tern", "pairs", 1, 10, open_loop=True, inflight_max=1024),
                   flow("mosquitto", "pairs", 1, 10, open_loop=True, inflight_max=1024))
    assert open_loop_inflight(rows) == "1,024"
