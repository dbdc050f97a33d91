from training.benchmark import ALL_LABELED, LABELED_ONLY, render_table


def _r(d, seed):
    return {"dice": [d, d], "hd95": [1.0, 3.0], "seed": seed, "step_seconds": 0.5}


def test_gap_recovered_uses_baselines_of_the_same_budget():
    results = {
        LABELED_ONLY: [_r(0.4, 0), _r(0.6, 1)],  # mean 0.5
        "bcp": [_r(0.8, 0), _r(0.64, 1)],  # (0.8-0.5)/(0.9-0.5)=75 %, (0.64-0.5)/0.4=35 %
        ALL_LABELED: [_r(0.9, 0), _r(0.9, 1)],
    }
    table = render_table(results, ["bg", "a", "b"], "# header")
    row = next(line for line in table.splitlines() if line.startswith("| bcp |"))
    assert "55 ± 20 %" in row  # mean and spread over seeds of 75 and 35
    assert "72.0 ± 8.0" in row  # mean Dice in %
    baseline = next(line for line in table.splitlines() if line.startswith("| labelled-only |"))
    assert "—" in baseline and "50.0 ± 10.0" in baseline


def test_gap_is_not_reported_when_baselines_do_not_separate():
    results = {LABELED_ONLY: [_r(0.5, 0)], "bcp": [_r(0.6, 0)], ALL_LABELED: [_r(0.505, 0)]}
    row = next(line for line in render_table(results, ["bg", "a", "b"], "#").splitlines()
               if line.startswith("| bcp |"))
    assert "n/a" in row
