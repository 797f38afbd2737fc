"""Issue 10: every bad input refused early and by name (file, line, column, value), on tiny hand-made files."""

import pickle

import pandas as pd
import pytest
from kedro.io import DatasetError

from emm.datasets import AliCCPCSVDataset, AliExpressDataset, CensusIncomeRawDataset, TorchModelDataset
from emm.datasets.aliexpress import CATEGORICAL, NUMERICAL
from helpers import make_model
from test_readers import COMMON, SKELETON, entry, write_raw


def read_all(source, **options) -> pd.DataFrame:
    return pd.concat(list(source.chunks(**options)), ignore_index=True)


ALI_CCP_HEADER = "click,purchase,101,205,D508"
ALI_CCP_ROWS = ["1,0,11,100,0.5", "0,0,12,101,1.5", "1,1,13,102,2.5", "0,0,14,103,3.5"]


def ali_ccp_csv(tmp_path, rows) -> AliCCPCSVDataset:
    (tmp_path / "ali.csv").write_text("\n".join([ALI_CCP_HEADER, *rows]) + "\n")
    return AliCCPCSVDataset(str(tmp_path / "ali.csv"), chunk_rows=2)


def aliexpress_row(search_id, click="0", conversion="0", numerical_1="0.25"):
    return ",".join([str(search_id), *["3"] * len(CATEGORICAL), numerical_1, *["0.5"] * (len(NUMERICAL) - 1), click, conversion])


def aliexpress_csv(tmp_path, rows) -> AliExpressDataset:
    header = ",".join(["search_id", *CATEGORICAL, *NUMERICAL, "click", "conversion"])
    (tmp_path / "train.csv").write_text("\n".join([header, *rows]) + "\n")
    return AliExpressDataset(str(tmp_path / "train.csv"), chunk_rows=2)


def test_the_tiny_files_read(tmp_path):
    assert read_all(ali_ccp_csv(tmp_path, ALI_CCP_ROWS).load())["D508"].tolist() == [0.5, 1.5, 2.5, 3.5]
    assert len(read_all(aliexpress_csv(tmp_path, [aliexpress_row(i) for i in range(4)]).load())) == 4


# 1. A row with a field too many: pandas took the first row's surplus for an index (every value one column
# to the right) and, with usecols, dropped later rows' surplus unsaid.
@pytest.mark.parametrize("line", [2, 3, 5])
def test_ali_ccp_csv_row_with_an_extra_field_is_refused(tmp_path, line):
    rows = list(ALI_CCP_ROWS)
    rows[line - 2] += ",9"
    with pytest.raises(DatasetError, match=rf"ali.csv, line {line}: 6 fields where 5 belong, one per column"):
        read_all(ali_ccp_csv(tmp_path, rows).load())


def test_headerless_ali_ccp_csv_row_with_an_extra_field_is_refused(tmp_path):
    row = ",".join(["1", "0", *["7"] * 18])
    (tmp_path / "test.csv").write_text(row + "\n" + row + ",9\n")
    with pytest.raises(DatasetError, match=r"test.csv, line 2: 21 fields where 20 belong"):
        read_all(AliCCPCSVDataset(str(tmp_path / "test.csv")).load())


@pytest.mark.parametrize("line", [2, 4])
def test_aliexpress_row_with_an_extra_field_is_refused(tmp_path, line):
    rows = [aliexpress_row(i) for i in range(4)]
    rows[line - 2] += ",9"
    with pytest.raises(DatasetError, match=rf"train.csv, line {line}: 83 fields where 82 belong"):
        read_all(aliexpress_csv(tmp_path, rows).load())


def test_raw_ali_ccp_first_line_with_an_extra_field_is_refused(tmp_path):
    dataset = write_raw(tmp_path, [SKELETON[0] + ",extra", *SKELETON[1:]], COMMON)
    with pytest.raises(DatasetError, match=r"skeleton.csv, line 1: 7 fields where 6 belong"):
        read_all(dataset.load())


# 2. Labels other than 0 and 1.
LABEL_MESSAGE = r"line 4: column '{}' holds 2 where a label, 0 or 1, belongs"


@pytest.mark.parametrize("label", ["click", "purchase"])
def test_ali_ccp_csv_label_other_than_0_or_1_is_refused(tmp_path, label):
    rows = list(ALI_CCP_ROWS)
    rows[2] = "2,0,13,102,2.5" if label == "click" else "1,2,13,102,2.5"
    with pytest.raises(DatasetError, match="ali.csv, " + LABEL_MESSAGE.format(label)):
        read_all(ali_ccp_csv(tmp_path, rows).load())


@pytest.mark.parametrize("label", ["click", "conversion"])
def test_aliexpress_label_other_than_0_or_1_is_refused(tmp_path, label):
    rows = [aliexpress_row(i) for i in range(4)]
    rows[2] = aliexpress_row(2, **{label: "2"})
    with pytest.raises(DatasetError, match="train.csv, " + LABEL_MESSAGE.format(label)):
        read_all(aliexpress_csv(tmp_path, rows).load())


def test_raw_ali_ccp_label_other_than_0_or_1_is_refused(tmp_path):
    skeleton = list(SKELETON)
    skeleton[3] = "4,2,1,u1,1," + entry("206", 5)
    with pytest.raises(DatasetError, match="skeleton.csv, " + LABEL_MESSAGE.format("click")):
        read_all(write_raw(tmp_path, skeleton, COMMON).load())


# 3. Numbers spelled non-finite: they passed as floats and reached the encoders as NaN.
NON_FINITE = ["inf", "-inf", "nan", "NaN", "1e999", "Infinity"]


@pytest.mark.parametrize("value", NON_FINITE)
def test_ali_ccp_csv_non_finite_dense_value_is_refused(tmp_path, value):
    rows = list(ALI_CCP_ROWS)
    rows[1] = f"0,0,12,101,{value}"
    with pytest.raises(DatasetError, match=r"ali.csv, line 3: column 'D508' holds \S+ where a finite number belongs") as error:
        read_all(ali_ccp_csv(tmp_path, rows).load())
    assert "np." not in str(error.value)


@pytest.mark.parametrize("value", NON_FINITE)
def test_aliexpress_non_finite_numerical_value_is_refused(tmp_path, value):
    rows = [aliexpress_row(i) for i in range(4)]
    rows[3] = aliexpress_row(3, numerical_1=value)
    with pytest.raises(DatasetError, match=r"train.csv, line 5: column 'numerical_1' holds .* where a finite number"):
        read_all(aliexpress_csv(tmp_path, rows).load())


@pytest.mark.parametrize("value", NON_FINITE)
def test_raw_ali_ccp_non_finite_feature_value_is_refused(tmp_path, value):
    skeleton = list(SKELETON)
    skeleton[2] = "3,0,0,u2,1," + entry("508", 102, value)
    with pytest.raises(DatasetError, match=rf"skeleton.csv, line 3: feature '508\\x02102\\x03{value}' has a non-finite value"):
        read_all(write_raw(tmp_path, skeleton, COMMON).load())


@pytest.mark.parametrize("value", NON_FINITE)
@pytest.mark.parametrize("column", [0, 5])  # age, wage per hour
def test_census_non_finite_number_is_refused(tmp_path, census_slice, value, column):
    from conftest import head_lines

    lines = head_lines(census_slice / "census-income.data.gz", 20)
    fields = lines[5].split(",")
    fields[column] = " " + value
    lines[5] = ",".join(fields)
    (tmp_path / "census-income.data").write_text("".join(lines))
    name = ["age", "wage per hour"][column // 5]
    dataset = CensusIncomeRawDataset(filepath=str(tmp_path / "census-income.data"), download=False)
    with pytest.raises(
        DatasetError, match=rf"census-income.data: line 6, column '{name}' holds '{value}', which is not a finite number"
    ):
        dataset.load()


# 4. Corrupt model files: the project's own message, never torch's advice to load with weights_only=False.
@pytest.fixture
def model_file(tmp_path):
    path = tmp_path / "m.pt"
    TorchModelDataset(str(path)).save(make_model("m", "a", [4]))
    return path


@pytest.mark.parametrize("damage", ["truncated", "garbage", "plain pickle"])
def test_a_corrupt_model_file_is_refused_by_name(model_file, damage):
    data = model_file.read_bytes()
    if damage == "truncated":
        model_file.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        model_file.write_bytes(b"\x80\x02not a model at all" * 10)
    else:
        model_file.write_bytes(pickle.dumps({"kind": "single_task_mlp", "spec": object()}))
    with pytest.raises(DatasetError) as error:
        TorchModelDataset(str(model_file)).load()
    message = str(error.value)
    assert f"Model file {model_file} is not a readable model file" in message
    assert "Rerun the stage that writes it" in message
    assert "weights_only" not in message and error.value.__cause__ is None and error.value.__suppress_context__
