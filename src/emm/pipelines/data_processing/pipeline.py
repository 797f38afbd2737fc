from kedro.pipeline import Pipeline, node

from emm.pipelines.data_processing.nodes import (
    build_feature_schema,
    encode_table,
    fit_encoders,
    split_pool_fusion,
    split_validation_test,
)


def create_pipeline(**kwargs) -> Pipeline:
    """Un-namespaced template; ``pipeline_registry`` instantiates it once per dataset."""
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
