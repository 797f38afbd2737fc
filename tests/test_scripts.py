"""The benchmark scripts' own logic (scripts/ is not a package: modules are loaded from their files)."""

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _seed_table(auc_a: float, auc_b: float, order=("EMM", "EMM+")) -> pd.DataFrame:
    values = {"EMM": auc_a, "EMM+": auc_b}
    return pd.DataFrame({"option": list(order), "test income": [values[o] for o in order]})


def test_options_spread_matches_options_by_name_in_the_first_files_order():
    options_spread = _script("options_spread")
    tables = [_seed_table(0.950, 0.954), _seed_table(0.952, 0.956, order=("EMM+", "EMM"))]
    means, deviations = options_spread.spread(tables, ["seed_42.csv", "seed_43.csv"])
    assert list(means.index) == ["EMM", "EMM+"]
    assert means.loc["EMM", "test income"] == pytest.approx(0.951)
    assert means.loc["EMM+", "test income"] == pytest.approx(0.955)
    assert deviations.loc["EMM+", "test income"] == pytest.approx(pd.Series([0.954, 0.956]).std())
    text = options_spread.markdown(means, deviations, seeds=2)
    assert "| EMM+ | 0.95500 ± 0.00141 |" in text


def test_options_spread_names_the_file_missing_an_option():
    options_spread = _script("options_spread")
    partial = pd.DataFrame({"option": ["EMM"], "test income": [0.95]})
    with pytest.raises(ValueError, match=r"seed_43\.csv has no row for \['EMM\+'\]"):
        options_spread.spread([_seed_table(0.950, 0.954), partial], ["seed_42.csv", "seed_43.csv"])


def test_options_spread_of_one_seed_shows_the_values_alone():
    options_spread = _script("options_spread")
    means, deviations = options_spread.spread([_seed_table(0.950, 0.954)], ["seed_42.csv"])
    text = options_spread.markdown(means, deviations, seeds=1)
    assert "| EMM | 0.95000 |" in text and "±" not in text.split("\n", 1)[1]


def test_option_table_written_by_one_seed_reads_back_for_the_spread(tmp_path):
    options_spread = _script("options_spread")
    table = pd.DataFrame(
        {"option": ["EMM", "pool average"], "test": [0.95354, 0.95357], "average test": [float("nan"), 0.99471]}
    )
    text = options_spread.write_table(table, tmp_path / "options_seed_42.md", "Options, seed 42. AUC:")
    assert text == (tmp_path / "options_seed_42.md").read_text()
    options_spread.write_table(table, tmp_path / "not yet made" / "options.md", "Options. AUC:")
    assert (tmp_path / "not yet made" / "options.csv").is_file()
    assert "| EMM | 0.95354 |  |" in text and "| pool average | 0.95357 | 0.99471 |" in text
    means, _ = options_spread.spread([pd.read_csv(tmp_path / "options_seed_42.csv")], ["options_seed_42.csv"])
    assert means.loc["pool average", "average test"] == pytest.approx(0.99471)
    assert pd.isna(means.loc["EMM", "average test"])
    spread_text = options_spread.write_spread([tmp_path / "options_seed_42.csv"], tmp_path / "options.md")
    assert spread_text == (tmp_path / "options.md").read_text()
    assert "| pool average | 0.95357 | 0.99471 |" in spread_text


def test_collected_options_tabulate_every_table_over_the_seeds_and_name_a_missing_seed(tmp_path):
    import subprocess
    import sys

    tables = ("fusion_options", "pool_options_never_married", "pool_options_income")
    for seed, auc in ((42, 0.950), (43, 0.952)):
        for table in tables:
            _seed_table(auc, auc + 0.004).to_csv(tmp_path / f"{table}_seed_{seed}.csv", index=False)
    command = [sys.executable, str(SCRIPTS / "benchmark_options.py"), "--collected", "--out", str(tmp_path)]
    done = subprocess.run([*command, "--seeds", "42,43"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    for table in tables:
        assert "| EMM+ | 0.95500 ± 0.00141 |" in (tmp_path / f"{table}.md").read_text()
    failed = subprocess.run([*command, "--seeds", "42,44"], capture_output=True, text=True)
    assert failed.returncode != 0
    assert "fusion_options_seed_44.csv" in failed.stderr


def test_logit_is_finite_at_certain_probabilities_and_inverts_the_sigmoid():
    options_spread = _script("options_spread")
    p = np.array([0.0, 0.25, 0.5, 1.0])
    log_odds = options_spread.logit(p)
    assert np.isfinite(log_odds).all()
    assert log_odds[1:3] == pytest.approx([np.log(1 / 3), 0.0])
    assert 1 / (1 + np.exp(-log_odds[1])) == pytest.approx(0.25)
