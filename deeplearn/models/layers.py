"""Pieces shared by the model families: logically named initialisers, initialisers
by name, PyTorch's default initialiser (to replicate PyTorch reference models), the
activation lookup, and Conv / Dense with their CPU forms.

Logical axis names (`embed`, `mlp`, `vocab`, `conv_in`, `conv_out`, ...) are attached
to parameters at init time; an experiment's sharding rules map them to mesh axes
(see ARCHITECTURE.md, "Sharding is data, not code", and the rule tables in
deeplearn/config.py). Narrow names (`embed`, `conv_in`) are axes a layer reads
whole; wide ones (`mlp`, `heads`, `conv_out`) are those that tensor parallelism
splits; consecutive layers alternate the two.

Kernel forms. `Conv` and `Dense` each compute in one of two forms (im2col or XLA's
convolution; one 2-D matmul or XLA's dot), chosen by `config.kernels` and so recorded
in config.json. The choice travels as a context, `Kernels(config.kernels)`, that
`deeplearn.step.MeshStep` enters around tracing, beside the mesh: a field would have
to pass through every family's constructor down to each layer, for parameters and
checkpoints that are the same either way. Outside a step (init, sampling, tests) the
forms are "auto". $DEEPLEARN_CONV_IMPL / $DEEPLEARN_DOT_IMPL, when set, win over the
config (a benchmark's A/B switch); the run's first line then says so
(`describe_kernels`).
"""

import contextvars
import itertools
import math
import os
import re
from typing import Callable

import jax
import jax.numpy as jnp
import flax.linen as nn
from jax import lax

from deeplearn.config import check_choice, did_you_mean

default_kernel_init = nn.initializers.lecun_normal()

# Kernel initialisers a model's `kernel_init` field may name. Lecture concept:
# a layer's output variance is fan_in * Var(w) * E[x^2], so scaling the
# weights' variance by 1 / fan_in keeps activations O(1) through any depth
# (LeCun et al., "Efficient BackProp", 1998); relu halves E[x^2], hence He et
# al.'s 2 / fan_in (ICCV 2015); Glorot & Bengio (AISTATS 2010) average fan_in
# and fan_out. "normal(0.01)" is a fixed scale, blind to the width: the
# activations shrink (or grow) geometrically with depth.
KERNEL_INITS = {
    "lecun_normal": default_kernel_init,
    "he_normal": nn.initializers.he_normal(),
    "glorot_normal": nn.initializers.glorot_normal(),
    "glorot_uniform": nn.initializers.glorot_uniform(),
}
_FIXED = re.compile(r"normal\(\s*([0-9.eE+-]+)\s*\)")


def logical_init(*axes, kernel_init=default_kernel_init, bias_init=nn.initializers.zeros_init()):
  """`kernel_init` / `bias_init` keyword arguments for nn.Dense or nn.Conv whose kernel
  has logical axes `axes`; the bias is named after the kernel's output axis.

    nn.Dense(200, **logical_init("embed", "mlp"))
    nn.Conv(32, (5, 5), **logical_init(None, None, "conv_in", "conv_out"))
  """
  return dict(kernel_init=nn.with_logical_partitioning(kernel_init, axes),
              bias_init=nn.with_logical_partitioning(bias_init, axes[-1:]))


def kernel_initializer(name: str, scale: float = 1.0):
  """The initialiser `name` (a key of KERNEL_INITS, or "normal(STD)": N(0, STD^2)
  whatever the fan-in), its draws multiplied by `scale`.

  A `scale` below 1 on the classifier is the "small last layer": near-equal
  logits, a near-uniform initial softmax (high temperature), a first loss of
  log(num_classes).
  """
  fixed = _FIXED.fullmatch(name.strip())
  if fixed:
    init = nn.initializers.normal(float(fixed.group(1)))
  elif name in KERNEL_INITS:
    init = KERNEL_INITS[name]
  else:
    raise ValueError(f"config.model.kernel_init={name!r} is not an initialiser; "
                     f"{did_you_mean(name, KERNEL_INITS)}use one of {sorted(KERNEL_INITS)}"
                     " or 'normal(STD)', e.g. 'normal(0.01)'.")
  if scale == 1.0:
    return init

  def scaled(key, shape, dtype=jnp.float32):
    return scale * init(key, shape, dtype)

  return scaled


def dense_inits(axes, kernel_init: str = "lecun_normal", bias_init: float = 0.0,
                scale: float = 1.0):
  """logical_init for a layer of a family with the init fields: kernels from
  `kernel_initializer(kernel_init, scale)`, biases the constant `bias_init` (a
  small positive one, e.g. 0.1, keeps relu units active at the start)."""
  return logical_init(*axes, kernel_init=kernel_initializer(kernel_init, scale),
                      bias_init=nn.initializers.constant(bias_init))


def torch_uniform(fan_in: int):
  """PyTorch's default init for Linear, Conv and GRU weights and biases alike:
  U(-1/sqrt(fan_in), 1/sqrt(fan_in)). (kaiming_uniform with a=sqrt(5) reduces to this.)
  Linear/Conv use fan_in = in_features * kernel size; GRU uses fan_in = hidden_size
  for every weight, input weights included."""
  bound = 1.0 / fan_in ** 0.5

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  return init


# The names `activation` takes: functions applied to each unit on its own, so
# a layer's width is its output's (not glu, which halves it; not softmax,
# which normalises across units). "identity" leaves a deep linear network.
ACTIVATIONS = ("relu", "gelu", "tanh", "sigmoid", "elu", "selu", "celu", "silu",
               "swish", "softplus", "leaky_relu", "relu6", "hard_tanh",
               "hard_sigmoid", "hard_silu", "log_sigmoid", "soft_sign", "mish",
               "identity")


def activation(name: str):
  """The elementwise activation `name` (one of ACTIVATIONS), from flax.linen or
  else jax.nn."""
  check_choice("config.model.activation", name, ACTIVATIONS,
               "an elementwise activation")
  return getattr(nn, name, None) or getattr(jax.nn, name)


# --- Which form: config.kernels -------------------------------------------------------
#
# The layers below each have a CPU form (the measurements are beside them) and XLA's
# own; config.kernels chooses, "auto" by the backend. See the module docstring for how
# the choice reaches them.
CONV_IMPLS = ("auto", "xla", "im2col")
CONV_IMPL_ENV = "DEEPLEARN_CONV_IMPL"
DOT_IMPLS = ("auto", "xla", "2d")
DOT_IMPL_ENV = "DEEPLEARN_DOT_IMPL"
# config.kernels: key -> its choices, and the environment variable that overrides it.
KERNELS = {"conv": CONV_IMPLS, "dot": DOT_IMPLS}
KERNEL_ENVS = {"conv": CONV_IMPL_ENV, "dot": DOT_IMPL_ENV}
DEFAULT_KERNELS = {"conv": "auto", "dot": "auto"}

# The step's config.kernels while it traces (`Kernels`); None outside a step.
# A context variable, as nn.logical_axis_rules: set and reset around each trace, so
# no choice outlives the step that made it.
_KERNELS = contextvars.ContextVar("deeplearn_kernels", default=None)


def _as_dict(kernels) -> dict:
  return dict(kernels.to_dict() if hasattr(kernels, "to_dict") else kernels or {})


def check_kernels(kernels) -> None:
  """Raises ValueError naming the key and its choices unless `kernels`
  (config.kernels) and the overriding environment variables are valid."""
  for key, value in _as_dict(kernels).items():
    if key not in KERNELS:
      raise ValueError(f"config.kernels.{key} is not a kernel choice; "
                       f"{did_you_mean(key, KERNELS)}use {sorted(KERNELS)}.")
    if value not in KERNELS[key]:
      raise ValueError(f"config.kernels.{key}={value!r} is not a form; "
                       f"{did_you_mean(value, KERNELS[key])}use one of {KERNELS[key]}.")
  for key, env in KERNEL_ENVS.items():
    value = os.environ.get(env)
    if value and value not in KERNELS[key]:
      raise ValueError(f"${env}={value!r} (overriding config.kernels.{key}) is not a"
                       f" form; {did_you_mean(value, KERNELS[key])}use one of"
                       f" {KERNELS[key]}, or unset it.")


class Kernels:
  """config.kernels, checked: within `with Kernels(config.kernels):` Conv and Dense
  trace in the forms it names. `deeplearn.step.MeshStep` holds one and enters it
  around every call (checked once here: entering costs under a microsecond)."""

  def __init__(self, kernels=None):
    check_kernels(kernels)
    self.kernels = {**DEFAULT_KERNELS, **_as_dict(kernels)}
    self._tokens = []

  def __enter__(self):
    self._tokens.append(_KERNELS.set(self.kernels))
    return self

  def __exit__(self, *exc_info):
    _KERNELS.reset(self._tokens.pop())


def _chosen(key: str, kernels=None) -> tuple[str, str | None]:
  """(form, the environment variable that set it or None): that variable if set,
  else `kernels[key]` (default: the step's, `Kernels`), else "auto"."""
  given = _KERNELS.get() if kernels is None else _as_dict(kernels)
  check_kernels({key: (given or {}).get(key, "auto")})  # and the environment's
  env = KERNEL_ENVS[key]
  if os.environ.get(env):
    return os.environ[env], env
  return (given or {}).get(key, "auto"), None


def conv_impl(kernels=None) -> str:
  """How `conv_general_dilated` computes a convolution: config.kernels.conv (or
  $DEEPLEARN_CONV_IMPL), one of CONV_IMPLS, read at trace time. "auto" (the default)
  means im2col for unpadded convolutions when jax's default backend is the CPU, XLA's
  own otherwise; "xla" and "im2col" force one (im2col only where `im2col_conv` covers
  the convolution)."""
  impl = _chosen("conv", kernels)[0]
  if impl == "auto" and jax.default_backend() != "cpu":
    impl = "xla"
  return impl


def dot_impl(kernels=None) -> str:
  """How `dot_general` computes a dense product: config.kernels.dot (or
  $DEEPLEARN_DOT_IMPL), one of DOT_IMPLS, read at trace time. "auto" (the default) is
  "2d" when jax's default backend is the CPU and "xla" elsewhere."""
  impl = _chosen("dot", kernels)[0]
  if impl == "auto":
    impl = "2d" if jax.default_backend() == "cpu" else "xla"
  return impl


def describe_kernels(kernels) -> str:
  """The forms `kernels` (config.kernels) resolve to on this backend, for a run's
  first line: "kernels conv=im2col dot=2d", "auto" resolved, overrides named."""
  parts = []
  for key, resolve in (("conv", conv_impl), ("dot", dot_impl)):
    impl, env = resolve(kernels), _chosen(key, kernels)[1]
    if impl == "auto":  # conv on CPU: chosen per convolution
      impl = "im2col(unpadded)/xla(padded)"
    if env:
      impl += (f" (${env} overrides config.kernels.{key}="
               f"{_as_dict(kernels).get(key, 'auto')!r})")
    parts.append(f"{key}={impl}")
  return "kernels " + " ".join(parts)


# --- Convolution as im2col + one matmul (XLA:CPU) ---------------------------------------
#
# XLA:CPU runs an unpadded ("VALID") convolution's forward pass near the matmul peak, but
# its gradient with respect to the input (a convolution of the output gradient, padded by
# kernel - 1, with the flipped kernel) up to an order of magnitude slower: for the EE-559
# net's second conv (batch 100, 8x8x32 -> 4x4x64, 5x5 VALID) 0.84 ms forward, about 11 ms
# for the input gradient, with or without --xla_cpu_use_onednn / --xla_cpu_use_xnnpack
# (jax 0.10.2, 2 cores, November 2026). Written as strided slices (the patches), one
# concatenation and one matmul, the same convolution differentiates into matmuls plus
# pads and adds that XLA fuses: forward + both gradients 2.4 ms instead of 14.5 ms, the
# whole SGD step of that net 6.0 ms instead of 22.5 ms. Forward + both gradients, XLA's
# time over im2col's, same machine: unpadded convs 1.04-2.7x (EE-559 conv1 / conv2,
# LeNet-5's, 3x3 and 5x5 with 32-64 channels, 1-D k5, 5x5 stride 2, 1x1 with 256
# outputs); padded ("SAME") ones 0.27-0.82x (3x3 / 5x5 / 7x7 SAME, AlexNet's 11x11
# stride-4 stem with padding 2): there XLA's own is kept. On accelerators XLA's always.


def _canonical(dimension_numbers, ndim: int) -> bool:
  """Whether the layouts are flax's: inputs and outputs [batch, *spatial, features],
  the kernel [*spatial, in, out]."""
  if dimension_numbers is None:
    return False
  dn = lax.conv_dimension_numbers((1,) * ndim, (1,) * ndim, dimension_numbers)
  spatial = tuple(range(1, ndim - 1))
  return (dn.lhs_spec == (0, ndim - 1) + spatial and dn.out_spec == dn.lhs_spec
          and dn.rhs_spec == (ndim - 1, ndim - 2) + tuple(range(ndim - 2)))


def _explicit_padding(lhs, rhs, window_strides, padding, rhs_dilation):
  """padding ("SAME" | "VALID" | pairs) as one (low, high) pair per spatial axis."""
  if isinstance(padding, str):
    dilated = tuple((k - 1) * d + 1 for k, d in
                    zip(rhs.shape[:-2], rhs_dilation or (1,) * (rhs.ndim - 2)))
    padding = lax.padtype_to_pads(lhs.shape[1:-1], dilated, tuple(window_strides), padding)
  return tuple(tuple(p) for p in padding)


def im2col_conv(lhs, rhs, window_strides, padding, rhs_dilation=None, precision=None):
  """lax.conv_general_dilated for lhs [batch, *spatial, in], rhs [*spatial, in, out]
  (flax's layouts), feature groups and input dilation 1: the patches, one strided
  slice per kernel offset, concatenated along the features and multiplied by the
  kernel reshaped to [prod(spatial) * in, out]. padding: "SAME" | "VALID" | pairs."""
  spatial = rhs.shape[:-2]
  nd = len(spatial)
  rhs_dilation = tuple(rhs_dilation or (1,) * nd)
  window_strides = tuple(window_strides)
  dilated = tuple((k - 1) * d + 1 for k, d in zip(spatial, rhs_dilation))
  padding = _explicit_padding(lhs, rhs, window_strides, padding, rhs_dilation)
  if any(p != (0, 0) for p in padding):
    lhs = jnp.pad(lhs, ((0, 0),) + padding + ((0, 0),))
  size = lhs.shape[1:-1]
  out = tuple((s - k) // st + 1 for s, k, st in zip(size, dilated, window_strides))
  if any(o < 1 for o in out):
    raise ValueError(f"a {spatial} kernel (dilation {rhs_dilation}) does not fit the "
                     f"padded input of spatial size {size}")
  columns = []
  for offset in itertools.product(*(range(k) for k in spatial)):
    start = (0,) + tuple(o * d for o, d in zip(offset, rhs_dilation)) + (0,)
    limit = ((lhs.shape[0],) + tuple(s + (n - 1) * st + 1 for s, n, st in
                                     zip(start[1:-1], out, window_strides)) + (lhs.shape[-1],))
    columns.append(lax.slice(lhs, start, limit, (1,) + window_strides + (1,)))
  patches = columns[0] if len(columns) == 1 else jnp.concatenate(columns, axis=-1)
  kernel = rhs.reshape(-1, rhs.shape[-1])  # [prod(spatial) * in, out], offset-major
  return lax.dot_general(patches, kernel, (((nd + 1,), (0,)), ((), ())), precision=precision)


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None,
                         rhs_dilation=None, dimension_numbers=None, feature_group_count=1,
                         batch_group_count=1, precision=None, preferred_element_type=None):
  """lax.conv_general_dilated, computed by `im2col_conv` where `conv_impl()` says so and
  the convolution is one it covers (flax layouts, no input dilation, one feature and
  batch group, no preferred element type); otherwise lax's own."""
  impl = conv_impl()
  if (impl != "xla" and _canonical(dimension_numbers, lhs.ndim)
      and all(d == 1 for d in (lhs_dilation or ())) and feature_group_count == 1
      and batch_group_count == 1 and preferred_element_type is None
      and (impl == "im2col" or all(p == (0, 0) for p in _explicit_padding(
          lhs, rhs, window_strides, padding, rhs_dilation)))):
    return im2col_conv(lhs, rhs, window_strides, padding, rhs_dilation, precision)
  return lax.conv_general_dilated(
      lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation, rhs_dilation=rhs_dilation,
      dimension_numbers=dimension_numbers, feature_group_count=feature_group_count,
      batch_group_count=batch_group_count, precision=precision,
      preferred_element_type=preferred_element_type)


class Conv(nn.Conv):
  """nn.Conv computing its convolution with `conv_general_dilated` above (im2col for
  unpadded convolutions on CPU). The same parameters, names and checkpoints as nn.Conv."""
  conv_general_dilated: Callable | None = conv_general_dilated


# --- Dense layers as one 2-D matmul (XLA:CPU) -------------------------------------------
#
# A dense layer on [batch, length, features] is a dot_general with two free dimensions on
# the left; its kernel gradient contracts two. XLA:CPU runs those 1.25-1.7x slower than
# the same products with the leading dimensions merged into one (forward + both
# gradients, float32, 2 cores, jax 0.10.2, November 2026: [12, 64, 128] x [128, 512]
# 1.71 ms vs 1.02 ms; [64, 256, 384] x [384, 1536] 412 vs 238 ms). On CPU the layers
# below merge them; elsewhere the dot_general is left to XLA as written.


def dot_general(lhs, rhs, dimension_numbers, precision=None, preferred_element_type=None,
                **kwargs):
  """lax.dot_general; a dense product (no batch dimensions, the contracted dimensions
  the trailing ones of `lhs` and the leading or trailing ones of `rhs`, each in
  order) runs as one 2-D matmul where `dot_impl()` says so."""
  (lc, rc), (lb, rb) = dimension_numbers
  lc, rc, n = tuple(lc), tuple(rc), len(lc)
  dense = (not lb and not rb and n and lc == tuple(range(lhs.ndim - n, lhs.ndim))
           and rc in (tuple(range(n)), tuple(range(rhs.ndim - n, rhs.ndim))))
  if not dense or (lhs.ndim - n <= 1 and rhs.ndim - n <= 1) or dot_impl() != "2d":
    return lax.dot_general(lhs, rhs, dimension_numbers, precision=precision,
                           preferred_element_type=preferred_element_type, **kwargs)
  free_l, inner = lhs.shape[:lhs.ndim - n], lhs.shape[lhs.ndim - n:]
  leading = rc == tuple(range(n))
  free_r = rhs.shape[n:] if leading else rhs.shape[:rhs.ndim - n]
  k = math.prod(inner)
  out = lax.dot_general(
      lhs.reshape(math.prod(free_l), k),
      rhs.reshape(k, math.prod(free_r)) if leading else rhs.reshape(math.prod(free_r), k),
      (((1,), (0 if leading else 1,)), ((), ())), precision=precision,
      preferred_element_type=preferred_element_type, **kwargs)
  return out.reshape(free_l + free_r)


def dense_einsum(lhs, rhs, contracted: int):
  """Contracts the last `contracted` axes of lhs with the first of rhs (an einsum
  such as "ble,ehk->blhk" or "blhk,hke->ble") through `dot_general`."""
  return dot_general(lhs, rhs, ((tuple(range(lhs.ndim - contracted, lhs.ndim)),
                                 tuple(range(contracted))), ((), ())))


class Dense(nn.Dense):
  """nn.Dense computing its product with `dot_general` above (one 2-D matmul on
  CPU). The same parameters, names and checkpoints as nn.Dense."""
  dot_general: Callable | None = dot_general
