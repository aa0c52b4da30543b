"""Datasets behind one registry: ``load_dataset(name, split, data_dir, **options) -> Dataset``.

Importing this package imports every loader module so that each registers its datasets.
"""

from unlearnleak.data import cifar, embedded, medmnist, stl10, tabular  # noqa: F401  (register loaders)
from unlearnleak.data.base import (
    DATA_DIR_ENV,
    DATASET_INFO,
    DATASETS,
    Dataset,
    DatasetInfo,
    FileRecord,
    Provenance,
    load_dataset,
    register_dataset,
    resolve_data_dir,
)
from unlearnleak.data.download import download
from unlearnleak.data.transform import TabularTransform, stratified_split

__all__ = [
    "DATASETS",
    "DATASET_INFO",
    "DATA_DIR_ENV",
    "Dataset",
    "DatasetInfo",
    "FileRecord",
    "Provenance",
    "TabularTransform",
    "download",
    "load_dataset",
    "register_dataset",
    "resolve_data_dir",
    "stratified_split",
]
