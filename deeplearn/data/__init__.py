"""Datasets for deeplearn: TFDS builders read through grain into sharded numpy batches.

`config.data.dataset` names one of deeplearn's offline builders (mnist1d, digits,
tiny_shakespeare) or any TFDS catalog dataset: image classification sets such as mnist,
cifar10, cifar100 and imagenet2012 (prepared from the tars in config.data.manual_dir) are
augmented by the ops of `deeplearn.data.preprocess`, named in config.data.pp_train / pp_eval.
The train loop calls exactly these four names.
"""

from deeplearn.data.pipeline import DatasetInfo, eval_dataset, get_info, train_dataset

__all__ = ["DatasetInfo", "eval_dataset", "get_info", "train_dataset"]
