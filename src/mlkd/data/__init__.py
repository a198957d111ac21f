"""Data layer: multi-label containers, ARFF reading, the MULAN benchmark catalogue, digits-ml, splits.

Quick start::

    from mlkd.data import load_dataset
    data = load_dataset("emotions")          # files under $MLKD_DATA/emotions/
    data.train.X, data.train.Y, data.test.X, data.test.Y
"""

from .arff import DroppedAttributeWarning, read_arff, read_arff_for_model, read_arff_pair, read_label_xml
from .catalog import (
    DATASET_NAMES,
    DATASETS,
    MULAN_NAMES,
    ChecksumError,
    DatasetInfo,
    DatasetNotFoundError,
    clear_cache,
    data_dir,
    dataset_status,
    load_dataset,
)
from .dataset import BenchmarkData, MultiLabelDataset
from .digits import make_digits_ml
from .splits import kfold_splits, validation_split

__all__ = [
    "MultiLabelDataset",
    "BenchmarkData",
    "read_arff",
    "read_arff_pair",
    "read_label_xml",
    "DroppedAttributeWarning",
    "read_arff_for_model",
    "load_dataset",
    "dataset_status",
    "DATASETS",
    "DATASET_NAMES",
    "MULAN_NAMES",
    "DatasetInfo",
    "data_dir",
    "clear_cache",
    "make_digits_ml",
    "validation_split",
    "kfold_splits",
    "DatasetNotFoundError",
    "ChecksumError",
]
