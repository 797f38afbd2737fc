"""Readers of Ali-CCP (raw Tianchi and preprocessed CSV) and AliExpress: real samples, hand-made files, bad input."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from kedro.io import DatasetError

from conftest import SHARED_DATA
from emm.datasets import AliCCPCSVDataset, AliCCPRawDataset, AliExpressDataset
from emm.datasets.ali_ccp import HEADERLESS_COLUMNS

ALI_CCP_SAMPLES = SHARED_DATA / "ali-ccp-samples"
ALIEXPRESS_SAMPLES = SHARED_DATA / "aliexpress-samples"


def entry(field, feature_id, value=1.0):
    return f"{field}\x02{feature_id}\x03{value}"


def feature_list(*entries):
    return "\x01".join(entries)


def write_raw(folder: Path, skeleton_lines: list[str], common_lines: list[str]) -> AliCCPRawDataset:
    (folder / "skeleton.csv").write_text("".join(line + "\n" for line in skeleton_lines))
    (folder / "common.csv").write_text("".join(line + "\n" for line in common_lines))
    return AliCCPRawDataset(str(folder / "skeleton.csv"), str(folder / "common.csv"), chunk_rows=2)


COMMON = [
    "u1,3," + feature_list(entry("101", 11), entry("109_14", 7, 0.5), entry("109_14", 8, 2.5)),
    "u2,2," + feature_list(entry("101", 12), entry("121", 3)),
]
SKELETON = [
    "1,1,0,u1,2," + feature_list(entry("205", 100), entry("508", 9, 0.25)),
    "2,0,1,u2,1," + feature_list(entry("205", 101)),  # purchase without click: dropped
    "3,0,0,u2,1," + feature_list(entry("205", 102)),
    "4,1,1,u1,1," + feature_list(entry("206", 5)),
]


def read_all(source, **options) -> pd.DataFrame:
    return pd.concat(list(source.chunks(**options)), ignore_index=True)


def test_raw_files_are_joined_on_the_common_feature_id(tmp_path):
    table = read_all(write_raw(tmp_path, SKELETON, COMMON).load())
    assert table["click"].tolist() == [1, 0, 1] and table["purchase"].tolist() == [0, 0, 1]
    assert table["205"].tolist() == [100, 102, -1]  # -1: field absent from the line
    assert table["101"].tolist() == [11, 12, 11]  # from the common features
    # several entries of one field: the largest value's id, and that value as the dense feature
    assert table["109_14"].tolist() == [8, -1, 8]
    assert table["D109_14"].tolist() == [2.5, 0.0, 2.5]
    assert table["D508"].tolist() == [0.25, 0.0, 0.0]
    assert table["121"].tolist() == [-1, 3, -1]
    assert all(table[column].dtype == np.int64 for column in ("click", "205", "101"))


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("5,0,0,u1,1," + entry("205", 1) + ",extra", "malformed line"),
        ("5,0,0,u1", "line 5: fewer than the 6"),
        ("5,0,0,u1,1,205\x03" + "1", "line 5: feature '205\\x031' is not field\\x02id\\x03value"),
        ("5,0,0,u1,1,205\x021", "line 5: feature '205\\x021' is not field\\x02id\\x03value"),
        ("5,0,0,u1,2," + entry("205", 1), "line 5: declares 2 features but its list has 1"),
        ("5,0,0,u9,1," + entry("205", 1), "line 5: common-feature id 'u9' is not in"),
        ("5,yes,0,u1,1," + entry("205", 1), "line 5: column 'click' holds 'yes' where an integer belongs"),
        ("5,0,0,u1,1," + entry("205", "x1"), "line 5: feature '205\\x02x1\\x031.0' has a non-numeric id"),
    ],
)
def test_a_bad_skeleton_line_is_named_by_file_and_line(tmp_path, line, message):
    dataset = write_raw(tmp_path, SKELETON + [line], COMMON)
    with pytest.raises(DatasetError) as error:
        read_all(dataset.load())
    assert "skeleton.csv" in str(error.value)
    assert message in str(error.value)


def test_a_common_feature_id_twice_is_an_error(tmp_path):
    with pytest.raises(DatasetError, match=r"common.csv, line 3: common-feature id 'u1' appears twice"):
        read_all(write_raw(tmp_path, SKELETON, COMMON + [COMMON[0]]).load())


def test_missing_raw_files_say_how_to_get_them(tmp_path):
    with pytest.raises(DatasetError, match="python -m emm.synthetic ali-ccp"):
        AliCCPRawDataset(str(tmp_path / "s.csv"), str(tmp_path / "c.csv")).load()


@pytest.fixture(scope="module")
def samples_present():
    if not ALI_CCP_SAMPLES.is_dir() or not ALIEXPRESS_SAMPLES.is_dir():
        pytest.skip("../shared/data samples not available")


def test_the_genuine_preprocessed_ali_ccp_samples_read_typed(samples_present):
    table = read_all(AliCCPCSVDataset(str(ALI_CCP_SAMPLES / "torch-rechub_ali_ccp_train_sample.csv"), chunk_rows=30).load())
    assert len(table) == 100 and table.shape[1] == 33
    assert table["D853"].dtype == np.float64 and table["301"].dtype == np.int64
    assert not ((table["purchase"] == 1) & (table["click"] == 0)).any()


def test_the_headerless_paddlerec_test_file_gets_the_aitm_columns(samples_present):
    path = ALI_CCP_SAMPLES / "paddlerec_aitm_test_sample.csv"
    raw = pd.read_csv(path, header=None)
    table = read_all(AliCCPCSVDataset(str(path)).load())
    assert list(table.columns) == HEADERLESS_COLUMNS
    kept = raw[~((raw[1] == 1) & (raw[0] == 0))]
    assert len(table) == len(kept) and table["101"].tolist() == kept[2].tolist()


def test_csv_errors_name_the_file_line_and_column(tmp_path, samples_present):
    lines = (ALI_CCP_SAMPLES / "torch-rechub_ali_ccp_train_sample.csv").read_text().splitlines()
    fields = lines[3].split(",")
    fields[-1] = "n/a"  # D853
    (tmp_path / "bad.csv").write_text("\n".join(lines[:3] + [",".join(fields)] + lines[4:]) + "\n")
    with pytest.raises(DatasetError, match=r"bad.csv, line 4: column 'D853' holds 'n/a' where a finite number belongs"):
        read_all(AliCCPCSVDataset(str(tmp_path / "bad.csv"), chunk_rows=2).load())
    (tmp_path / "no_click.csv").write_text("\n".join(",".join(f.split(",")[1:]) for f in lines) + "\n")
    with pytest.raises(DatasetError, match="no_click.csv: line 1 is no header"):
        read_all(AliCCPCSVDataset(str(tmp_path / "no_click.csv")).load())


def test_aliexpress_reads_the_asked_countries(tmp_path, samples_present):
    sample = ALIEXPRESS_SAMPLES / "fuxictr_tiny_mtl_train.csv"
    for country in ("NL", "ES"):
        (tmp_path / f"AliExpress_{country}").mkdir()
        (tmp_path / f"AliExpress_{country}" / "train.csv").write_bytes(sample.read_bytes())
    source = AliExpressDataset(str(tmp_path / "AliExpress_{country}" / "train.csv"), chunk_rows=40).load()
    one = read_all(source, countries=["NL"])
    assert one.shape == (100, 82) and "country" not in one
    both = read_all(source, countries=["NL", "ES"])
    assert both["country"].tolist() == [0] * 100 + [1] * 100
    with pytest.raises(DatasetError, match="name the countries"):
        read_all(source)
    with pytest.raises(DatasetError, match=r"AliExpress_FR/train.csv"):
        read_all(source, countries=["FR"])
    with pytest.raises(DatasetError, match="has no \\{country\\} field"):
        read_all(AliExpressDataset(str(sample)).load(), countries=["NL"])


def test_aliexpress_missing_column_is_named(tmp_path, samples_present):
    table = pd.read_csv(ALIEXPRESS_SAMPLES / "fuxictr_tiny_mtl_train.csv").drop(columns="numerical_7")
    table.to_csv(tmp_path / "train.csv", index=False)
    with pytest.raises(DatasetError, match=r"train.csv: missing columns \['numerical_7'\]"):
        read_all(AliExpressDataset(str(tmp_path / "train.csv")).load())
