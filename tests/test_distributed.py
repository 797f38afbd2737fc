"""Data-parallel training: shards of a Parquet table, the training loop under torch DDP, and a Kedro node
that runs it in 2 processes through torchrun (gloo, CPU)."""

import numpy as np
import pandas as pd
import pytest
import torch
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner

from emm.datasets import ParquetTableDataset
from emm.models.distributed import process_group, rank_device
from emm.models.mlp import SingleTaskMLP, pool_model_spec
from emm.models.tabular import TabularData, input_signature
from emm.models.training import TrainingConfig, _steps_per_epoch, fit, predict
from emm.pipelines.model_training import model_seed
from emm.pipelines.train_pool.pipeline import create_pipeline
from emm.tables import ParquetTableShard
from test_training import SCHEMA, toy_table

ROWS = 600  # even: the two ranks' shards are equal, so DDP's mean of their mean gradients is the whole batch's


def parquet_table(frame: pd.DataFrame, path, row_group_rows: int = 70):
    dataset = ParquetTableDataset(str(path), row_group_rows=row_group_rows)
    dataset.save([frame.iloc[:250], frame.iloc[250:]])  # two files, row groups that straddle the shards' edges
    return dataset.load()


def test_shards_are_disjoint_balanced_and_cover_every_row_whichever_way_they_are_read(tmp_path):
    frame = toy_table(301, 0)
    table = parquet_table(frame, tmp_path / "table")
    for world_size in (1, 2, 3, 7):
        shards = [table.shard(rank, world_size) for rank in range(world_size)]
        assert shards[0].start == 0 and shards[-1].stop == len(frame)
        assert all(a.stop == b.start for a, b in zip(shards, shards[1:]))
        assert max(map(len, shards)) - min(map(len, shards)) <= 1
        for shard in shards:
            expected = frame.iloc[shard.start : shard.stop].reset_index(drop=True)
            pd.testing.assert_frame_equal(shard.read(), expected)
            pd.testing.assert_frame_equal(pd.concat(shard.iter_chunks(), ignore_index=True), expected)
            pd.testing.assert_frame_equal(shard.read(["label_t"]), expected[["label_t"]])
            assert len(shard) == len(expected)
    # Only the row groups a shard overlaps are read: rank 1 of 2 (rows 150-301) starts in the third of the
    # first file's groups of 70 rows.
    assert table.shard(1, 2).row_groups == [(0, 2), (0, 3), (1, 0)]


def test_a_table_too_small_for_its_ranks_is_refused_by_name(tmp_path):
    table = parquet_table(toy_table(300, 0), tmp_path / "table")
    with pytest.raises(ValueError, match=r"table: 300 rows cannot give each of 301 ranks a row"):
        ParquetTableShard(table, 0, 301)
    with pytest.raises(ValueError, match="rank 2 is not one of the 2 ranks"):
        table.shard(2, 2)


@pytest.mark.parametrize("batch_size", [1, 2, 5, 16])
def test_steps_per_epoch_counts_the_steps_the_loop_takes(batch_size):
    """Ranks agree on the fewest steps of any rank by this count: it must be what an epoch really takes."""
    for rows in range(1, 40):
        data = TabularData.from_frame(toy_table(rows, 0), SCHEMA)
        trained = [labels for _, labels in data.batches(batch_size, torch.Generator()) if len(labels) >= 2]
        assert _steps_per_epoch(rows, batch_size) == len(trained), rows


@pytest.mark.parametrize(
    "settings",
    [
        {},
        {"nodes": 2},
        {"nproc_per_node": 0},
        {"nproc_per_node": "2"},
        {"nproc_per_node": True},
        {"nproc_per_node": 2, "nnodes": 2},
        2,
    ],
)
def test_unusable_distributed_settings_are_refused_when_read(settings):
    with pytest.raises(ValueError, match=r"training\.distributed .*nproc_per_node"):
        TrainingConfig.from_params({"distributed": settings})


def test_joining_a_process_group_outside_torchrun_says_how_to_start(monkeypatch):
    for variable in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(variable, raising=False)
    with pytest.raises(RuntimeError, match=r"lacks \['RANK', .*torch\.distributed\.run"):
        with process_group("cpu"):
            pass


def test_each_rank_gets_the_gpu_of_its_local_rank(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert rank_device("auto", 1) == torch.device("cuda:1")
    assert rank_device("cpu", 1) == torch.device("cpu")
    with pytest.raises(ValueError, match=r"'cuda:0', one GPU, .*auto or cuda"):
        rank_device("cuda:0", 1)
    with pytest.raises(ValueError, match=r"local rank 2 trains on GPU 2, but only 2 CUDA device.*nproc_per_node"):
        rank_device("cuda", 2)


# Without BatchNorm or dropout a row's loss depends on the weights alone, so one DDP step over two shards of
# B rows each is one step over their 2B rows: the check that both ranks trained, each on its own rows.
POOL = {"embedding_dim": 2, "dropout": 0.0, "batch_norm": False, "activation": "ReLU"}
TRAINING = {"batch_size": ROWS // 2, "learning_rate": 0.01, "max_epochs": 3, "patience": 3, "seed": 5}
TRAINING |= {"progress_bar": False, "device": "cpu", "max_in_memory_rows": 100, "shuffle_buffer_rows": 140}


POOL_MODEL = {"task": "t", "hidden_dims": [8], "training": {"distributed": {"nproc_per_node": 2}}}


def run_pool_node(train, validation, name: str) -> dict:
    """The train_pool pipeline's training node, run by Kedro on an in-memory catalog: it starts torchrun."""
    pipeline = create_pipeline({name: POOL_MODEL}).only_nodes(f"train_pool_model_{name}")
    catalog = DataCatalog(
        {
            "pool_train": MemoryDataset(train, copy_mode="assign"),
            "validation": MemoryDataset(validation, copy_mode="assign"),
            "feature_schema": MemoryDataset(SCHEMA),
            f"params:pool.models.{name}": MemoryDataset(POOL_MODEL),
            "params:pool": MemoryDataset(POOL),
            "params:training": MemoryDataset(TRAINING),
            **{output: MemoryDataset(copy_mode="assign") for output in pipeline.outputs()},
        }
    )
    SequentialRunner().run(pipeline, catalog)
    return {output: catalog.load(output) for output in pipeline.outputs()}


def single_process_model(train: TabularData, validation: TabularData, name: str) -> SingleTaskMLP:
    """What the pool node builds, trained in this process with one batch of both shards' rows per step."""
    seed = model_seed(TRAINING["seed"], name)
    torch.manual_seed(seed)
    model = SingleTaskMLP(pool_model_spec(name, "t", input_signature(SCHEMA), [8], **POOL))
    config = TrainingConfig.from_params({**TRAINING, "batch_size": len(train), "seed": seed})
    fit(model, train, validation, ["t"], config)
    return model


def test_the_pool_node_trains_with_ddp_in_two_processes_as_one_process_would_on_both_shards(tmp_path):
    frame, validation_frame = toy_table(ROWS, 0), toy_table(300, 1)
    train = parquet_table(frame, tmp_path / "pool_train")
    outputs = run_pool_node(train, validation_frame, "m")
    model, report = outputs["pool_model_m"], outputs["pool_training_m"]

    ranks = report["distributed"]["ranks"]
    assert report["distributed"]["world_size"] == 2 and report["distributed"]["backend"] == "gloo"
    assert [rank["rows"] for rank in ranks] == [[0, ROWS // 2], [ROWS // 2, ROWS]]
    assert ranks[0]["parameter_sha256"] == ranks[1]["parameter_sha256"]
    assert len(report["train_loss"]) == 3 and report["device"] == "cpu"

    # The model rank 0 saved, loaded back by the node, predicts...
    validation = TabularData.from_frame(validation_frame, SCHEMA)
    probabilities = predict(model, validation)
    assert probabilities.shape == (300, 1) and np.isfinite(probabilities).all()
    # ...and is what one process gets from one batch of both shards per step, not from rank 0's shard alone.
    whole = TabularData.from_frame(frame, SCHEMA)
    expected = single_process_model(whole, validation, "m")
    for (key, value), trained in zip(expected.state_dict().items(), model.state_dict().values()):
        torch.testing.assert_close(trained, value, atol=1e-5, rtol=1e-4, msg=key)
    rank_zero_only = single_process_model(whole.rows(slice(0, ROWS // 2)), validation, "m")
    pairs = zip(rank_zero_only.state_dict().values(), model.state_dict().values())
    assert not all(torch.allclose(a, b, atol=1e-5) for a, b in pairs)


def test_a_failing_rank_is_named_with_the_end_of_its_stderr(tmp_path):
    """A category code beyond the vocabulary in rank 1's rows only: rank 1 fails in its forward pass, and
    rank 0, waiting for its gradients, fails after it."""
    frame = toy_table(ROWS, 0)
    frame.loc[ROWS - 1, "group"] = 99
    with pytest.raises(RuntimeError) as failure:
        run_pool_node(parquet_table(frame, tmp_path / "pool_train"), toy_table(300, 1), "broken")
    message = str(failure.value)
    assert message.startswith("broken: DDP training in 2 processes failed (torchrun exit code 1); rank 1 failed first")
    assert "IndexError: index out of range" in message
    assert "The end of its stderr:\n[rank1]" in message


def test_without_distributed_settings_the_model_trains_in_the_nodes_process(monkeypatch):
    from emm.pipelines import model_training

    def refuse(*args, **kwargs):
        raise AssertionError("torchrun was started")

    monkeypatch.setattr(model_training, "train_with_torchrun", refuse)
    table = toy_table(300, 4)
    model, report = model_training.train_model(
        lambda: SingleTaskMLP(pool_model_spec("m", "t", input_signature(SCHEMA), [8], **POOL)),
        table,
        table,
        SCHEMA,
        ["t"],
        TrainingConfig.from_params({**TRAINING, "max_epochs": 1}),
        "m",
    )
    assert "distributed" not in report and len(report["train_loss"]) == 1
