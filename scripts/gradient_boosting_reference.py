"""A non-neural reference on the pipeline's own encoded tables: gradient boosting per task.

    .venv/bin/python scripts/gradient_boosting_reference.py [--namespace census]

Reads data/05_model_input/<namespace>/{train,validation,test}.parquet and the feature schema written by the
data_processing pipeline, fits scikit-learn's HistGradientBoostingClassifier on the training table (its own
10% early-stopping split), and prints validation and test AUC per task. It shows how much signal the
features hold, independently of any MLP.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import roc_auc_score


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--namespace", default="census")
    arguments = parser.parse_args()
    features = Path("data/04_feature") / arguments.namespace
    tables = Path("data/05_model_input") / arguments.namespace
    schema = json.loads((features / "feature_schema.json").read_text())
    categorical = [column["name"] for column in schema["categorical"]]
    columns = categorical + schema["dense"]
    train, validation, test = (pd.read_parquet(tables / f"{split}.parquet") for split in ("train", "validation", "test"))
    for task in schema["tasks"]:
        label = task["label_column"]
        model = HistGradientBoostingClassifier(
            max_iter=600,
            learning_rate=0.06,
            max_leaf_nodes=63,
            categorical_features=list(range(len(categorical))),
            early_stopping=True,
            validation_fraction=0.1,
            random_state=0,
        )
        model.fit(train[columns].to_numpy(np.float64), train[label])
        scores = {
            name: roc_auc_score(table[label], model.predict_proba(table[columns].to_numpy(np.float64))[:, 1])
            for name, table in (("validation", validation), ("test", test))
        }
        print(f"{task['name']}: validation AUC {scores['validation']:.5f}, test AUC {scores['test']:.5f} ({model.n_iter_} rounds)")


if __name__ == "__main__":
    main()
