"""Datasets for deeplearn: TFDS builders read through grain into sharded numpy batches.

`config.data.dataset` names one of deeplearn's offline builders (mnist1d, digits,
tiny_shakespeare) or any TFDS catalog dataset. The train loop calls exactly these four names.
"""

from deeplearn.data.pipeline import DatasetInfo, eval_dataset, get_info, train_dataset

__all__ = ["DatasetInfo", "eval_dataset", "get_info", "train_dataset"]
