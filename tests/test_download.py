import gzip
import http.server
import threading
from functools import partial

import pytest
from kedro.io import DatasetError

from emm.datasets.census_income import CensusIncomeRawDataset

from conftest import head_lines


@pytest.fixture
def mirror(tmp_path, census_slice):
    """A folder holding a few real rows as census-income.data.gz, as UCI serves them."""
    folder = tmp_path / "mirror"
    folder.mkdir()
    with gzip.open(folder / "census-income.data.gz", "wt") as handle:
        handle.writelines(head_lines(census_slice / "census-income.data.gz", 50))
    return folder


@pytest.fixture
def http_mirror(mirror):
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(mirror))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def test_missing_file_is_downloaded_from_a_file_url(tmp_path, mirror):
    target = tmp_path / "raw" / "census-income.data"
    dataset = CensusIncomeRawDataset(filepath=str(target), url=(mirror / "census-income.data.gz").as_uri())
    assert not dataset.exists()
    table = dataset.load()
    assert len(table) == 50 and table.shape[1] == 42
    assert (tmp_path / "raw" / "census-income.data.gz").is_file()
    assert dataset.exists()


def test_missing_file_is_downloaded_over_http(tmp_path, http_mirror):
    target = tmp_path / "raw" / "census-income.data"
    dataset = CensusIncomeRawDataset(filepath=str(target), url=http_mirror + "census-income.data.gz")
    assert len(dataset.load()) == 50


def test_failed_download_says_where_to_put_the_file_and_leaves_nothing(tmp_path, http_mirror):
    target = tmp_path / "raw" / "census-income.data"
    dataset = CensusIncomeRawDataset(filepath=str(target), url=http_mirror + "no-such-file.gz")
    with pytest.raises(DatasetError, match=r"downloading .*no-such-file.gz failed.*Put the UCI"):
        dataset.load()
    assert list((tmp_path / "raw").iterdir()) == []


def test_existing_file_is_read_without_download(tmp_path, mirror):
    dataset = CensusIncomeRawDataset(filepath=str(mirror / "census-income.data"), url="http://127.0.0.1:9/unused")
    assert len(dataset.load()) == 50
