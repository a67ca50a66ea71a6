"""Offline TFDS builders, by the dataset name a config writes (`config.data.dataset`)."""

from deeplearn.data.builders.canvas import DigitsCanvas
from deeplearn.data.builders.dates import Dates
from deeplearn.data.builders.digits import SklearnDigits
from deeplearn.data.builders.mnist1d import Mnist1d
from deeplearn.data.builders.tiny_shakespeare import TinyShakespeareLocal

BUILDERS = {
    "mnist1d": Mnist1d,
    "digits": SklearnDigits,
    "tiny_shakespeare": TinyShakespeareLocal,
    "dates": Dates,
    "digits_canvas": DigitsCanvas,
}
