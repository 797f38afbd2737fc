"""Schema-true SYNTHETIC Ali-CCP and AliExpress files, for scale tests and benchmarks only.

The real sets need a login to download; these files have their formats, columns, types, cardinalities
(scaled with the row count) and label rates, and a click -> purchase/conversion funnel with learnable
signal: each row's click and purchase probabilities come from hidden user and item effects, a user-item
category match and a few dense features, so a model that reads the ids and values can beat chance. Results
on them say how fast and how big, never how good on the real data. Every folder written gets a
``SYNTHETIC.txt`` saying so.

    python -m emm.synthetic ali-ccp --rows 10000000 --out data/01_raw/synthetic/ali-ccp
    python -m emm.synthetic ali-ccp-csv --rows 100000 --out data/01_raw/synthetic/ali-ccp-csv
    python -m emm.synthetic aliexpress --rows 5000000 --countries NL --out data/01_raw/synthetic/aliexpress
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
from tqdm.auto import tqdm

from emm.datasets.ali_ccp import DENSE_FIELDS, ENTRY, FIELD_ID, ID_VALUE, dense_column
from emm.datasets.aliexpress import CATEGORICAL, NUMERICAL

CHUNK_ROWS = 500_000
# Real label rates: Ali-CCP about 3.9% clicks and 0.02% purchases of all impressions (0.55% of clicks);
# AliExpress NL about 2.1% clicks and 0.07% conversions.
ALI_CCP_RATES = {"click": 0.039, "purchase_given_click": 0.0055}
ALIEXPRESS_RATES = {"click": 0.021, "purchase_given_click": 0.035}
# Ali-CCP user fields (in the common-features file) and item/context fields (in the skeleton), with the
# number of impressions per distinct id in the real training set, used to scale cardinalities.
USER_FIELDS = {"121": 98, "122": 14, "124": 3, "125": 8, "126": 4, "127": 4, "128": 3, "129": 5}
HISTORY_FIELDS = ["109_14", "110_14", "127_14", "150_14"]
CONTEXT_FIELDS = {"210": 0.0, "216": 0.0, "508": 0.35, "509": 0.45, "702": 0.5, "853": 0.55}  # share absent
SYNTHETIC_NOTE = (
    "SYNTHETIC data written by `python -m emm.synthetic`, {description}.\n"
    "It has the format, columns, types and label rates of the real files, and nothing else of them:\n"
    "results on it measure speed and memory, never quality on the real dataset.\n"
)


@dataclass
class Funnel:
    """Intercepts that give the click and purchase-after-click rates asked for."""

    click_bias: float
    purchase_bias: float

    @classmethod
    def calibrate(cls, click_signal: np.ndarray, purchase_signal: np.ndarray, rates: dict) -> Funnel:
        return cls(_intercept(click_signal, rates["click"]), _intercept(purchase_signal, rates["purchase_given_click"]))

    def draw(self, click_signal, purchase_signal, rng) -> tuple[np.ndarray, np.ndarray]:
        click = rng.random(len(click_signal)) < _sigmoid(self.click_bias + click_signal)
        purchase = click & (rng.random(len(click_signal)) < _sigmoid(self.purchase_bias + purchase_signal))
        return click.astype(np.int64), purchase.astype(np.int64)


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


def _intercept(signal: np.ndarray, rate: float) -> float:
    low, high = -30.0, 30.0
    for _ in range(60):
        middle = (low + high) / 2
        low, high = (middle, high) if _sigmoid(middle + signal).mean() < rate else (low, middle)
    return (low + high) / 2


def _write_note(folder: Path, description: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "SYNTHETIC.txt").write_text(SYNTHETIC_NOTE.format(description=description))


def _chunks(rows: int) -> list[int]:
    return [min(CHUNK_ROWS, rows - start) for start in range(0, rows, CHUNK_ROWS)]


class AliCCPWorld:
    """Users with fixed profiles and histories, items with fixed attributes, sized for ``rows`` rows."""

    def __init__(self, rows: int, seed: int):
        rng = np.random.default_rng(seed)
        self.n_users = max(20, rows // 180)
        self.n_items = max(40, rows // 90)
        self.n_categories = max(10, min(6929, self.n_items // 60))
        self.n_contexts = self.n_users * 3  # common-feature ids: a user in one of 3 contexts
        self.user_profile = {field: rng.integers(0, card, self.n_users) for field, card in USER_FIELDS.items()}
        self.user_effect = rng.normal(0, 0.6, self.n_users)
        self.user_buyer = rng.normal(0, 0.8, self.n_users)
        self.user_favourite = rng.integers(0, self.n_categories, self.n_users)
        self.item_category = rng.integers(0, self.n_categories, self.n_items)
        self.item_shop = rng.integers(0, max(10, self.n_items // 2), self.n_items)
        self.item_effect = rng.normal(0, 0.6, self.n_items)
        self.item_quality = rng.normal(0, 0.8, self.n_items)
        self.item_popularity = rng.zipf(1.3, self.n_items).astype(np.float64)
        self.item_popularity /= self.item_popularity.sum()
        self.context_user = rng.integers(0, self.n_users, self.n_contexts)
        # 32 hex digits like the release's md5 ids
        self.context_ids = np.array([f"{value:032x}" for value in rng.integers(0, 2**62, self.n_contexts)])
        self.seed = seed

    def impressions(self, n: int, rng) -> dict[str, np.ndarray]:
        context = rng.integers(0, self.n_contexts, n)
        user = self.context_user[context]
        item = rng.choice(self.n_items, n, p=self.item_popularity)
        match = (self.item_category[item] == self.user_favourite[user]).astype(np.float64)
        scene = rng.integers(0, 3, n)
        dense = {field: np.where(rng.random(n) < absent, 0.0, rng.gamma(2.0, 0.5, n)) for field, absent in CONTEXT_FIELDS.items() if field in DENSE_FIELDS}
        click_signal = self.user_effect[user] + self.item_effect[item] + 1.5 * match + 0.3 * dense["508"] + 0.2 * (scene == 1)
        purchase_signal = self.user_buyer[user] + self.item_quality[item] + 0.8 * match + 0.4 * dense["702"]
        return {
            "context": context, "user": user, "item": item, "scene": scene, "dense": dense,
            "click_signal": click_signal, "purchase_signal": purchase_signal,
        }  # fmt: skip

    def funnel(self, rates: dict) -> Funnel:
        sample = self.impressions(200_000, np.random.default_rng(self.seed + 1))
        return Funnel.calibrate(sample["click_signal"], sample["purchase_signal"], rates)

    def item_fields(self, rows: dict, rng) -> dict[str, tuple[np.ndarray, np.ndarray | None]]:
        """(ids, values or None for 1.0) per skeleton field; ids < 0 mark an absent field."""
        item, n = rows["item"], len(rows["item"])
        fields = {
            "205": (item, None),
            "206": (self.item_category[item], None),
            "207": (self.item_shop[item], None),
            "210": (item % max(10, self.n_items // 4), None),
            "216": (item % max(10, self.n_items // 5), None),
            "301": (rows["scene"], None),
        }
        for field in ("508", "509", "702", "853"):
            values = rows["dense"][field]
            ids = np.where(values > 0, rng.integers(0, max(10, self.n_items // 8), n), -1)
            fields[field] = (ids, np.round(values, 5))
        return fields


def _entries(field: str, ids: np.ndarray, values: np.ndarray | None) -> pa.Array:
    """``field\\x02id\\x03value`` per row, null where the id is negative (absent)."""
    id_text = pc.cast(pa.array(ids), pa.string())
    value_text = pa.array(np.full(len(ids), "1.0")) if values is None else pc.cast(pa.array(values), pa.string())
    text = pc.binary_join_element_wise(field + FIELD_ID, id_text, ID_VALUE, value_text, "")
    return pc.if_else(pa.array(ids < 0), pa.scalar(None, pa.string()), text)


def _feature_list(entries: list[pa.Array]) -> tuple[pa.Array, np.ndarray]:
    joined = pc.binary_join_element_wise(*entries, ENTRY, null_handling="skip")
    counts = sum((~pc.is_null(entry).to_numpy(zero_copy_only=False)).astype(np.int64) for entry in entries)
    return joined, counts


def _write_lines(handle, columns: list[pa.Array]) -> None:
    lines = pc.binary_join_element_wise(*columns, ",")
    handle.write("\n".join(lines.to_pylist()))
    handle.write("\n")


def _common_features(world: AliCCPWorld, rng) -> tuple[list[pa.Array], int]:
    """One line per context: the user's profile and histories (several entries with counts)."""
    user = world.context_user
    entries = [_entries("101", user, None)]
    entries += [_entries(field, world.user_profile[field][user], None) for field in USER_FIELDS]
    for k, field in enumerate(HISTORY_FIELDS):
        # The favourite category (shop, brand, intention) first with the largest count, then up to 5 others.
        favourite = world.user_favourite[user] if k == 0 else (user * 7 + 13 * k) % max(10, world.n_items // 10)
        entries.append(_entries(field, favourite, np.round(np.log1p(rng.integers(8, 40, len(user))), 5)))
        for slot in range(5):
            ids = np.where(rng.random(len(user)) < 0.6, rng.integers(0, max(10, world.n_items // 10), len(user)), -1)
            entries.append(_entries(field, ids, np.round(np.log1p(rng.integers(1, 7, len(user))), 5)))
    joined, counts = _feature_list(entries)
    return [pa.array(world.context_ids), pc.cast(pa.array(counts), pa.string()), joined], len(user)


def generate_ali_ccp_raw(
    folder: Path, train_rows: int, test_rows: int, seed: int = 0, rates: dict | None = None
) -> None:
    """``sample_skeleton_{train,test}.csv`` and ``common_features_{train,test}.csv``, Tianchi layout."""
    world = AliCCPWorld(train_rows + test_rows, seed)
    funnel = world.funnel(rates or ALI_CCP_RATES)
    _write_note(folder, f"Ali-CCP raw Tianchi layout, {train_rows} train and {test_rows} test skeleton rows")
    rng = np.random.default_rng(seed + 2)
    sample_id = 0
    for split, rows in (("train", train_rows), ("test", test_rows)):
        with open(folder / f"common_features_{split}.csv", "w") as handle:
            columns, _ = _common_features(world, rng)
            _write_lines(handle, columns)
        with open(folder / f"sample_skeleton_{split}.csv", "w") as handle:
            for n in tqdm(_chunks(rows), desc=f"ali-ccp {split}", unit="chunk"):
                impressions = world.impressions(n, rng)
                click, purchase = funnel.draw(impressions["click_signal"], impressions["purchase_signal"], rng)
                fields = world.item_fields(impressions, rng)
                joined, counts = _feature_list([_entries(f, ids, values) for f, (ids, values) in fields.items()])
                ids = np.arange(sample_id + 1, sample_id + n + 1)
                sample_id += n
                _write_lines(handle, [
                    pc.cast(pa.array(ids), pa.string()), pc.cast(pa.array(click), pa.string()),
                    pc.cast(pa.array(purchase), pa.string()), pa.array(world.context_ids[impressions["context"]]),
                    pc.cast(pa.array(counts), pa.string()), joined,
                ])  # fmt: skip


def generate_ali_ccp_csv(
    folder: Path, train_rows: int, test_rows: int, seed: int = 0, rates: dict | None = None
) -> None:
    """``train.csv`` and ``test.csv`` in the preprocessed torch-rechub layout (``click,purchase,101,...,D853``),
    ids coded 0..n-1 as that preprocessing does."""
    world = AliCCPWorld(train_rows + test_rows, seed)
    funnel = world.funnel(rates or ALI_CCP_RATES)
    _write_note(folder, f"Ali-CCP preprocessed CSV layout, {train_rows} train and {test_rows} test rows")
    rng = np.random.default_rng(seed + 2)
    for split, rows in (("train", train_rows), ("test", test_rows)):
        path, header = folder / f"{split}.csv", True
        for n in tqdm(_chunks(rows), desc=f"ali-ccp-csv {split}", unit="chunk"):
            impressions = world.impressions(n, rng)
            click, purchase = funnel.draw(impressions["click_signal"], impressions["purchase_signal"], rng)
            user = impressions["user"]
            columns = {"click": click, "purchase": purchase, "101": user}
            columns |= {field: world.user_profile[field][user] for field in USER_FIELDS}
            columns |= {field: ids + 1 for field, (ids, _) in world.item_fields(impressions, rng).items()}
            columns |= {field: world.user_favourite[user] if field == "109_14" else user % 97 for field in HISTORY_FIELDS}
            columns |= {dense_column(field): np.round(rng.random(n), 4) for field in HISTORY_FIELDS}
            columns |= {dense_column(field): np.round(impressions["dense"][field], 4) for field in ("508", "509", "702", "853")}
            _write_csv(path, pd.DataFrame(columns), header)
            header = False


def _write_csv(path: Path, table: pd.DataFrame, header: bool) -> None:
    options = pacsv.WriteOptions(include_header=False, quoting_style="none")
    with open(path, "wb" if header else "ab") as handle:
        if header:  # pyarrow would quote the names
            handle.write((",".join(table.columns) + "\n").encode())
        pacsv.write_csv(pa.Table.from_pandas(table, preserve_index=False), handle, write_options=options)


# Cardinalities of AliExpress's categorical columns (as seen in the published files, rounded).
ALIEXPRESS_CARDINALITIES = [10, 4, 4, 2, 30, 8, 60, 10, 10, 2, 2, 2, 2, 2, 2, 2]


def generate_aliexpress(
    folder: Path, countries: list[str], train_rows: int, test_rows: int, seed: int = 0, rates: dict | None = None
) -> None:
    """``AliExpress_<country>/{train,test}.csv`` per country, ``search_id`` grouping about 30 rows."""
    _write_note(folder, f"AliExpress layout, countries {countries}, {train_rows} train and {test_rows} test rows each")
    for offset, country in enumerate(countries):
        rng = np.random.default_rng(seed + offset)
        categorical_effects = [rng.normal(0, 0.5, card) for card in ALIEXPRESS_CARDINALITIES]
        click_weights, purchase_weights = rng.normal(0, 0.4, len(NUMERICAL)), rng.normal(0, 0.4, len(NUMERICAL))

        def draw(n):
            codes = [rng.integers(0, card, n) for card in ALIEXPRESS_CARDINALITIES]
            numerical = np.round(rng.beta(0.7, 1.5, (n, len(NUMERICAL))), 6)
            click_signal = sum(effect[c] for effect, c in zip(categorical_effects, codes)) + (numerical - 0.32) @ click_weights
            purchase_signal = 0.5 * click_signal + (numerical - 0.32) @ purchase_weights
            return codes, numerical, click_signal, purchase_signal

        _, _, click_sample, purchase_sample = draw(100_000)
        funnel = Funnel.calibrate(click_sample, purchase_sample, rates or ALIEXPRESS_RATES)
        target = folder / f"AliExpress_{country}"
        target.mkdir(parents=True, exist_ok=True)
        search_id = 0
        for split, rows in (("train", train_rows), ("test", test_rows)):
            header = True
            for n in tqdm(_chunks(rows), desc=f"aliexpress {country} {split}", unit="chunk"):
                codes, numerical, click_signal, purchase_signal = draw(n)
                click, conversion = funnel.draw(click_signal, purchase_signal, rng)
                table = {"search_id": search_id + np.arange(n) // 30}
                search_id += -(-n // 30)
                table |= dict(zip(CATEGORICAL, codes))
                table |= dict(zip(NUMERICAL, numerical.T))
                table |= {"click": click, "conversion": conversion}
                _write_csv(target / f"{split}.csv", pd.DataFrame(table), header)
                header = False


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m emm.synthetic", description=__doc__.split("\n\n")[0])
    parser.add_argument("format", choices=["ali-ccp", "ali-ccp-csv", "aliexpress"])
    parser.add_argument("--rows", type=int, required=True, help="rows of the training file")
    parser.add_argument("--test-rows", type=int, help="rows of the test file (default: a quarter of --rows)")
    parser.add_argument("--out", type=Path, required=True, help="folder to write into")
    parser.add_argument("--countries", nargs="+", default=["NL"], help="aliexpress only")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--click-rate", type=float, help="share of rows clicked (default: the real dataset's)")
    parser.add_argument(
        "--purchase-rate", type=float, help="share of clicks bought / converted (default: the real dataset's)"
    )
    args = parser.parse_args(argv)
    test_rows = args.test_rows if args.test_rows is not None else max(1, args.rows // 4)
    defaults = ALIEXPRESS_RATES if args.format == "aliexpress" else ALI_CCP_RATES
    rates = {
        "click": args.click_rate or defaults["click"],
        "purchase_given_click": args.purchase_rate or defaults["purchase_given_click"],
    }
    started = time.perf_counter()
    if args.format == "ali-ccp":
        generate_ali_ccp_raw(args.out, args.rows, test_rows, args.seed, rates)
    elif args.format == "ali-ccp-csv":
        generate_ali_ccp_csv(args.out, args.rows, test_rows, args.seed, rates)
    else:
        generate_aliexpress(args.out, args.countries, args.rows, test_rows, args.seed, rates)
    print(f"Wrote synthetic {args.format} ({args.rows} train, {test_rows} test rows) to {args.out} "
          f"in {time.perf_counter() - started:.1f} s")  # fmt: skip


if __name__ == "__main__":
    main()
