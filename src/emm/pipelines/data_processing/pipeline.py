from kedro.pipeline import Pipeline, node

from emm.pipelines.data_processing.nodes import (
    build_feature_schema,
    encode_rows,
    encode_table,
    encode_training_rows,
    fit_encoders,
    fit_streaming_encoders,
    split_encoded_rows,
    split_pool_fusion,
    split_validation_test,
)


def create_pipeline(streaming: bool = False, **kwargs) -> Pipeline:
    """Un-namespaced template; ``pipeline_registry`` instantiates it once per dataset. Both variants give
    the same outputs: ``encoders``, ``feature_schema`` and the encoded ``train``, ``pool_train``,
    ``fusion_train``, ``validation`` and ``test`` tables."""
    return _streaming() if streaming else _in_memory()


def _in_memory() -> Pipeline:
    """Raw files read whole; validation and test rows from the test file, stratified splits."""
    return Pipeline(
        [
            node(fit_encoders, ["raw_train", "params:data_processing"], "encoders", name="fit_encoders"),
            node(encode_table, ["raw_train", "encoders"], "train", name="encode_train"),
            node(encode_table, ["raw_test", "encoders"], "encoded_holdout", name="encode_holdout"),
            node(
                split_validation_test,
                ["encoded_holdout", "encoders", "params:data_processing"],
                ["validation", "test"],
                name="split_validation_test",
            ),
            node(
                split_pool_fusion,
                ["train", "encoders", "params:data_processing"],
                ["pool_train", "fusion_train"],
                name="split_pool_fusion",
            ),
            node(build_feature_schema, ["encoders", "train"], "feature_schema", name="build_feature_schema"),
        ]
    )


def _streaming() -> Pipeline:
    """Raw files read in chunks; validation rows drawn from the training file, the test file kept whole."""
    return Pipeline(
        [
            node(fit_streaming_encoders, ["raw_train", "params:data_processing"], "encoders", name="fit_encoders"),
            node(
                encode_training_rows,
                ["raw_train", "encoders", "params:data_processing"],
                "encoded_train",
                name="encode_train",
            ),
            node(encode_rows, ["raw_test", "encoders", "params:data_processing"], "test", name="encode_test"),
            node(
                split_encoded_rows,
                ["encoded_train", "params:data_processing"],
                ["train", "pool_train", "fusion_train", "validation"],
                name="split_encoded_rows",
            ),
            node(build_feature_schema, ["encoders", "train"], "feature_schema", name="build_feature_schema"),
        ]
    )
