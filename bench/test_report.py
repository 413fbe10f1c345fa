"""Checks of the statistics bench/report.py judges the latency target with (run: .venv/bin/pytest
bench/test_report.py)."""
import pathlib
import random
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from report import p99_gap, pooled_latency, pooled_p99, quantile, repo_relative  # noqa: E402


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
