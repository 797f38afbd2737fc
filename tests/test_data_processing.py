import numpy as np
import pandas as pd
import pytest
import yaml
from kedro.io import DatasetError

from emm.datasets.census_income import CENSUS_COLUMNS, CensusIncomeRawDataset
from emm.pipelines.data_processing.nodes import (
    UNSEEN_CODE,
    build_feature_schema,
    encode_table,
    fit_encoders,
    split_pool_fusion,
    split_validation_test,
)

from conftest import PROJECT_ROOT


@pytest.fixture(scope="module")
def params():
    with open(PROJECT_ROOT / "conf" / "base" / "parameters_census.yml") as handle:
        return yaml.safe_load(handle)["census"]["data_processing"]


@pytest.fixture(scope="module")
def raw(census_slice):
    train = CensusIncomeRawDataset(filepath=str(census_slice / "census-income.data"), download=False).load()
    test = CensusIncomeRawDataset(filepath=str(census_slice / "census-income.test"), download=False).load()
    return train.iloc[:600].reset_index(drop=True), test.iloc[:400].reset_index(drop=True)


def test_raw_files_get_the_42_documented_columns(raw):
    train, _ = raw
    assert list(train.columns) == CENSUS_COLUMNS
    assert len(CENSUS_COLUMNS) == 42
    assert set(train["income"]) == {"- 50000.", "50000+."}
    assert not train.map(lambda value: value.startswith(" ")).any().any()


def test_labels_follow_the_declared_positive_values(raw, params):
    train, _ = raw
    encoders = fit_encoders(train, params)
    table = encode_table(train, encoders)
    assert table["label_income"].mean() == pytest.approx((train["income"] == "50000+.").mean())
    assert table["label_never_married"].mean() == pytest.approx((train["marital stat"] == "Never married").mean())
    assert 0 < table["label_income"].mean() < 0.2
    assert 0.3 < table["label_never_married"].mean() < 0.6


def test_no_label_or_dropped_column_is_a_feature(raw, params):
    encoders = fit_encoders(raw[0], params)
    features = set(encoders["categorical"]) | set(encoders["dense"])
    assert {"income", "marital stat", "instance weight"}.isdisjoint(features)
    assert len(features) == 42 - 3
    assert list(encoders["dense"]) == params["dense_columns"]


def test_a_dense_column_used_as_label_leaves_the_features(raw, params):
    tasks = params["tasks"] + [{"name": "old", "column": "age", "positive": ["70", "80"]}]
    encoders = fit_encoders(raw[0], {**params, "tasks": tasks})
    assert "age" not in encoders["dense"] and "age" not in encoders["categorical"]


def test_encoders_are_fitted_on_the_training_file_only(raw, params):
    train, test = raw
    encoders = fit_encoders(train, params)
    for column, vocabulary in encoders["categorical"].items():
        assert vocabulary == sorted(train[column].unique())
    age = encoders["dense"]["age"]
    assert age["mean"] == pytest.approx(train["age"].astype(float).mean())
    encoded = encode_table(train, encoders)
    assert encoded["age"].mean() == pytest.approx(0, abs=1e-5)
    assert encoded["age"].std(ddof=0) == pytest.approx(1, abs=1e-4)
    gains = encoders["dense"]["capital gains"]
    assert gains["log1p"] and gains["mean"] == pytest.approx(np.log1p(train["capital gains"].astype(float)).mean())


def test_values_unseen_in_training_get_the_unseen_code(raw, params):
    train, test = raw
    encoders = fit_encoders(train, params)
    altered = test.copy()
    altered.loc[0, "education"] = "A degree nobody has"
    encoded = encode_table(altered, encoders)
    assert encoded.loc[0, "education"] == UNSEEN_CODE
    seen = altered.loc[1, "education"]
    assert encoded.loc[1, "education"] == encoders["categorical"]["education"].index(seen) + 1
    unseen_in_test = ~test["country of birth self"].isin(train["country of birth self"])
    assert (encode_table(test, encoders).loc[unseen_in_test, "country of birth self"] == UNSEEN_CODE).all()


def test_holdout_split_is_half_half_stratified_disjoint_and_repeatable(raw, params):
    train, test = raw
    encoders = fit_encoders(train, params)
    encoded = encode_table(test, encoders)
    encoded["row"] = np.arange(len(encoded))
    validation, held_out = split_validation_test(encoded, encoders, params)
    assert len(validation) == len(held_out) == len(encoded) // 2
    assert set(validation["row"]).isdisjoint(held_out["row"])
    assert abs(validation["label_income"].sum() - held_out["label_income"].sum()) <= 1
    again, _ = split_validation_test(encoded, encoders, params)
    pd.testing.assert_frame_equal(validation, again)


def test_feature_schema_lists_vocabularies_with_the_unseen_slot(raw, params):
    encoders = fit_encoders(raw[0], params)
    schema = build_feature_schema(encoders, encode_table(raw[0], encoders))
    education = next(c for c in schema["categorical"] if c["name"] == "education")
    assert education["vocabulary_size"] == raw[0]["education"].nunique() + 1
    assert [t["label_column"] for t in schema["tasks"]] == ["label_income", "label_never_married"]


def test_unknown_task_column_names_the_column(raw, params):
    tasks = [{"name": "income", "column": "salary", "positive": ["50000+."]}]
    with pytest.raises(KeyError, match="salary"):
        fit_encoders(raw[0], {**params, "tasks": tasks})


def test_missing_feature_column_names_the_column(raw, params):
    encoders = fit_encoders(raw[0], params)
    with pytest.raises(KeyError, match="education"):
        encode_table(raw[1].drop(columns=["education"]), encoders)


def test_positive_value_that_never_occurs_is_refused(raw, params):
    tasks = [{"name": "income", "column": "income", "positive": ["50000+"]}]
    with pytest.raises(ValueError, match="income"):
        fit_encoders(raw[0], {**params, "tasks": tasks})


def test_non_numeric_dense_value_names_column_and_row(raw, params):
    train = raw[0].copy()
    train.loc[4, "wage per hour"] = "lots"
    with pytest.raises(ValueError, match="'wage per hour'.*'lots'.*row 5"):
        fit_encoders(train, params)


def test_missing_raw_file_says_where_to_put_it(tmp_path):
    dataset = CensusIncomeRawDataset(filepath=str(tmp_path / "census-income.data"), download=False)
    with pytest.raises(DatasetError, match="census-income.data.*EMM_CENSUS_DIR"):
        dataset.load()


def _write(path, lines):
    path.write_text("".join(lines))
    return CensusIncomeRawDataset(filepath=str(path), download=False)


def test_truncated_row_names_file_and_line(tmp_path, census_slice):
    from conftest import head_lines

    lines = head_lines(census_slice / "census-income.data.gz", 20)
    lines[12] = ",".join(lines[12].split(",")[:30]) + "\n"
    dataset = _write(tmp_path / "census-income.data", lines)
    with pytest.raises(DatasetError, match=r"census-income.data: line 13 has 30 non-empty fields"):
        dataset.load()


def test_row_with_extra_fields_names_the_file(tmp_path, census_slice):
    from conftest import head_lines

    lines = head_lines(census_slice / "census-income.data.gz", 20)
    lines[7] = lines[7].rstrip("\n") + ", surplus\n"
    dataset = _write(tmp_path / "census-income.data", lines)
    with pytest.raises(DatasetError, match=r"census-income.data.*line 8"):
        dataset.load()


def test_unreadable_gzip_names_the_file(tmp_path):
    (tmp_path / "census-income.data.gz").write_bytes(b"\x1f\x8b\x08 not really gzip")
    dataset = CensusIncomeRawDataset(filepath=str(tmp_path / "census-income.data"), download=False)
    with pytest.raises(DatasetError, match="census-income.data.gz"):
        dataset.load()


def test_pool_and_fusion_rows_partition_the_training_file(raw, params):
    train, _ = raw
    encoders = fit_encoders(train, params)
    encoded = encode_table(train, encoders)
    encoded["row"] = np.arange(len(encoded))
    pool_rows, fusion_rows = split_pool_fusion(encoded, encoders, {**params, "fusion_fraction": 0.25})
    assert len(fusion_rows) == pytest.approx(0.25 * len(encoded), abs=1)
    assert set(pool_rows["row"]).isdisjoint(fusion_rows["row"])
    assert len(pool_rows) + len(fusion_rows) == len(encoded)
    whole, same = split_pool_fusion(encoded, encoders, {**params, "fusion_fraction": 0})
    assert len(whole) == len(same) == len(encoded)
    with pytest.raises(ValueError, match="fusion_fraction"):
        split_pool_fusion(encoded, encoders, {**params, "fusion_fraction": 1.5})


def test_dense_columns_get_a_value_code_twin_for_frequent_values(raw, params):
    train, test = raw
    value_codes = {"columns": ["age", "weeks worked in year"], "min_count": 5}
    encoders = fit_encoders(train, {**params, "value_codes": value_codes})
    assert set(encoders["value_codes"]) == {"age", "weeks worked in year"}
    counts = train["weeks worked in year"].value_counts()
    assert set(encoders["value_codes"]["weeks worked in year"]) == set(counts[counts >= 5].index)
    encoded = encode_table(train, encoders)
    vocabulary = encoders["value_codes"]["weeks worked in year"]
    for raw_value, code in zip(train["weeks worked in year"], encoded["weeks worked in year="]):
        expected = vocabulary.index(raw_value) + 1 if raw_value in vocabulary else UNSEEN_CODE
        assert code == expected
    schema = build_feature_schema(encoders, encoded)
    assert {"name": "age=", "vocabulary_size": len(encoders["value_codes"]["age"]) + 1} in schema["categorical"]
    assert "age" in schema["dense"]
    without = fit_encoders(train, {key: value for key, value in params.items() if key != "value_codes"})
    assert without["value_codes"] == {}
    with pytest.raises(ValueError, match="education"):
        fit_encoders(train, {**params, "value_codes": {"columns": ["education"], "min_count": 5}})


def test_dense_columns_get_a_piecewise_linear_encoding_between_training_quantiles(raw, params):
    train, test = raw
    without = {key: value for key, value in params.items() if key != "piecewise_linear"}
    encoders = fit_encoders(train, {**without, "piecewise_linear": {"columns": ["age", "capital gains"], "bins": 4}})
    ages = train["age"].astype(float)
    assert encoders["bin_edges"]["age"] == pytest.approx(ages.quantile([0, 0.25, 0.5, 0.75, 1]).tolist())
    # Most rows have no capital gains: the quantiles below the top one are all 0 and merge into one edge.
    assert len(encoders["bin_edges"]["capital gains"]) == 2
    encoded = encode_table(test, encoders)
    edges = encoders["bin_edges"]["age"]
    for raw_age, row in zip(test["age"].astype(float), encoded[[f"age#{j}" for j in range(4)]].to_numpy()):
        for j, value in enumerate(row):
            expected = min(max((raw_age - edges[j]) / (edges[j + 1] - edges[j]), 0.0), 1.0)
            assert value == pytest.approx(expected, abs=1e-6)
    gains = np.log1p(test["capital gains"].astype(float))  # a log-scaled column is binned after log1p
    low, high = encoders["bin_edges"]["capital gains"]
    assert encoded["capital gains#0"].to_numpy() == pytest.approx(np.clip((gains - low) / (high - low), 0, 1), abs=1e-6)
    schema = build_feature_schema(encoders, encoded)
    assert schema["dense"] == [*params["dense_columns"], "age#0", "age#1", "age#2", "age#3", "capital gains#0"]
    assert fit_encoders(train, without)["bin_edges"] == {}
    with pytest.raises(ValueError, match="piecewise_linear columns \\['education'\\]"):
        fit_encoders(train, {**without, "piecewise_linear": {"columns": ["education"], "bins": 4}})
