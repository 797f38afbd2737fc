"""The synthetic generators write the real formats, read back by the real readers, with the real label rates
and a click -> purchase funnel, and say that they are synthetic."""

import pandas as pd
import pytest

from conftest import SHARED_DATA
from emm.datasets import AliCCPCSVDataset, AliCCPRawDataset, AliExpressDataset
from emm.synthetic import ALI_CCP_RATES, generate_ali_ccp_csv, generate_ali_ccp_raw, generate_aliexpress, main

ROWS = 60000


def read_all(source, **options):
    return pd.concat(list(source.chunks(**options)), ignore_index=True)


@pytest.fixture(scope="module")
def ali_ccp_raw(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ali-ccp")
    generate_ali_ccp_raw(folder, ROWS, 1000, seed=3)
    return folder, read_all(
        AliCCPRawDataset(str(folder / "sample_skeleton_train.csv"), str(folder / "common_features_train.csv")).load()
    )


def test_raw_ali_ccp_has_the_release_layout_and_rates(ali_ccp_raw):
    folder, table = ali_ccp_raw
    assert "SYNTHETIC" in (folder / "SYNTHETIC.txt").read_text()
    first = (folder / "sample_skeleton_train.csv").read_text().split("\n", 1)[0].split(",")
    assert len(first) == 6 and len(first[3]) == 32 and "\x01" in first[5]
    assert len(table) == ROWS  # no purchase without click to drop
    assert table["click"].mean() == pytest.approx(ALI_CCP_RATES["click"], rel=0.25)
    assert 0 < table["purchase"].sum() < table["click"].sum()
    assert (table["109_14"] >= 0).all() and (table["D109_14"] > 0).all()  # every user has a history


def test_raw_ali_ccp_clicks_follow_a_learnable_signal(ali_ccp_raw):
    _, table = ali_ccp_raw
    # the user's favourite category (kept 109_14 entry) matching the item's category (206) raises clicks
    match = table["109_14"] == table["206"]
    assert table.loc[match, "click"].mean() > 2 * table.loc[~match, "click"].mean()


def test_preprocessed_ali_ccp_csv_has_the_shared_columns(tmp_path):
    generate_ali_ccp_csv(tmp_path, 2000, 500, seed=1)
    table = read_all(AliCCPCSVDataset(str(tmp_path / "train.csv")).load())
    sample = SHARED_DATA / "ali-ccp-samples" / "torch-rechub_ali_ccp_train_sample.csv"
    if sample.is_file():
        assert sorted(table.columns) == sorted(pd.read_csv(sample, nrows=1).columns)
    assert len(table) == 2000 and table.shape[1] == 33


def test_aliexpress_has_the_release_columns_per_country(tmp_path):
    main(["aliexpress", "--rows", "3000", "--test-rows", "600", "--countries", "NL", "US", "--out", str(tmp_path)])
    table = read_all(AliExpressDataset(str(tmp_path / "AliExpress_{country}" / "train.csv")).load(), countries=["NL", "US"])
    assert len(table) == 6000
    sample = SHARED_DATA / "aliexpress-samples" / "fuxictr_tiny_mtl_train.csv"
    if sample.is_file():
        assert list(pd.read_csv(tmp_path / "AliExpress_NL" / "test.csv", nrows=1).columns) == list(
            pd.read_csv(sample, nrows=1).columns
        )
    assert not ((table["conversion"] == 1) & (table["click"] == 0)).any()
    assert 0 < table["conversion"].sum() < table["click"].sum()


def test_generation_is_seeded(tmp_path):
    generate_aliexpress(tmp_path / "a", ["NL"], 500, 100, seed=5)
    generate_aliexpress(tmp_path / "b", ["NL"], 500, 100, seed=5)
    assert (tmp_path / "a" / "AliExpress_NL" / "train.csv").read_bytes() == (
        tmp_path / "b" / "AliExpress_NL" / "train.csv"
    ).read_bytes()
