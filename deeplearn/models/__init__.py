"""Model families: experiments name one in `config.model.name`; the rest of
`config.model` are that module's fields (deeplearn/models/registry.py).

Importing `deeplearn.models` imports every family, each registering itself
with `@register("<name>")`.
"""

from deeplearn.models.registry import fields, get_model, register, registered  # noqa: F401
from deeplearn.models import (  # noqa: F401
    alexnet, autoencoder, cascade, convnet, gan, inception, lenet, linear, maxout, mlp, mnist1d,
    ngram, resnet, rnn, seq2seq, transformer, two_tower, vae, vgg)
