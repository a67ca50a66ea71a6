"""Quantisation with qwix: rules from config, quantisation-aware training,
post-training quantisation and quantised checkpoints.

Lecture concept ("low precision"): trained networks tolerate coarse numbers;
8 bits suffice for inference and 16 for training, fixed-point integer
arithmetic is what CPUs run fastest, TPUs compute in bfloat16. Papers: Jacob
et al., "Quantization and Training of Neural Networks for Efficient
Integer-Arithmetic-Only Inference" (CVPR 2018): symmetric scales per output
channel, and quantisation-aware training that runs the forward pass through
"fake" quantisation (round to the grid, compute in float) with straight-through
gradients.

`config.quantization` (docs/quantization.md):

  mode   "none" | "qat": train through qwix's fake quantisation (QtProvider),
         the model wrapped when the supervised scheme builds it | "ptq":
         train in float; `deeplearn.evaluate --quantize config` quantises the
         finished run with these rules (PtqProvider)
  rules  ((module-path regex, weight dtype, activation dtype[, calibration]),
         ...): first match wins, as in qwix. Weight dtype "int8" | "int4";
         activation dtype "int8" | "int4" | "none" (weights only);
         calibration qwix's weight calibration, "absmax" (default),
         "absmax,S", "minmax", "rms,S" or "fixed,A,B". Module paths are
         flax's, joined by "/": "Conv_0", "Dense_1", "block_0/attn/query".

Everything is checked before anything compiles (`check`): names, regexes,
calibration formats, and an abstract trace of the quantised model's init,
which finds rules that match no module and what qwix refuses.

What qwix does, and the little done here:
- PTQ convolutions: qwix 0.1.8 quantises both operands of a convolution to
  one type and refuses weights-only rules; `PtqProvider` below lets a
  weights-only rule keep float activations (XLA:CPU cannot compile an int4 x
  int4 convolution at all). Dense products, einsums and QAT take weights-only
  rules as qwix does.
- PTQ weights are stored in the shape the op computes with, which the CPU
  kernel forms (layers.py: im2col convolutions, 2-D matmuls) reshape, and
  flax's logical-axis boxes check: PTQ runs with config.kernels xla.
- On disk: qwix has no checkpoint format of its own; orbax (tensorstore)
  stores int8 and int4 natively, int4 packed two to a byte (measured: 2^20
  int4 values, 546,670 bytes on disk; int8 1,070,827; float32 3,898,398).
  `save` writes the quantised tree as a flat dict by leaf path with
  checksums; `restore` puts it back onto the PTQ model's abstract tree.
"""

import dataclasses
import json
import os
import re
import shutil

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import qwix
# qwix's own pieces that PtqProvider below reuses (not in its public API).
from qwix._src.core import conv_general as qwix_conv
from qwix._src.providers import ptq as qwix_ptq
from qwix._src.utils import flax_util as qwix_flax

from deeplearn import checkpoint, files
from deeplearn.config import check_choice, did_you_mean
from deeplearn.models import layers

MODES = ("none", "qat", "ptq")
WEIGHT_DTYPES = {"int8": jnp.int8, "int4": jnp.int4}
ACT_DTYPES = {"none": None, **WEIGHT_DTYPES}
# `deeplearn.evaluate --quantize NAME`: int8 weights and activations; int4
# weights (the dense products' activations stay float).
PRESETS = {"int8": ((".*", "int8", "int8"),),
           "int4": ((".*", "int4", "none"),)}
# The kernel forms PTQ traces in (see the module docstring).
PTQ_KERNELS = {"conv": "xla", "dot": "xla"}
_CONV = "conv_general_dilated"
MANIFEST = "quantized.json"


def parse_rules(rules, key: str = "config.quantization.rules") -> list[tuple]:
  """The rules as (regex, weight dtype, act dtype, calibration) tuples of
  names, each checked; raises ValueError naming `key[i]` and the fix."""
  if isinstance(rules, str) or not rules:
    raise ValueError(f"{key}={rules!r} must be a non-empty tuple of (module-path"
                     " regex, weight dtype, activation dtype[, calibration]),"
                     " e.g. ((\".*\", \"int8\", \"int8\"),).")
  parsed = []
  for i, rule in enumerate(rules):
    where = f"{key}[{i}]={tuple(rule) if isinstance(rule, (list, tuple)) else rule!r}"
    if isinstance(rule, str) or not isinstance(rule, (list, tuple)) or len(
        rule) not in (3, 4):
      raise ValueError(f"{where}: a rule is (module-path regex, weight dtype,"
                       " activation dtype[, calibration]).")
    path, weight, act, *calibration = rule
    calibration = calibration[0] if calibration else "absmax"
    try:
      re.compile(path)
    except (re.error, TypeError) as e:
      raise ValueError(f"{where}: {path!r} is not a regular expression ({e}).")
    if weight not in WEIGHT_DTYPES:
      raise ValueError(f"{where}: weight dtype {weight!r} is not"
                       f" supported; {did_you_mean(weight, WEIGHT_DTYPES)}use"
                       f" one of {list(WEIGHT_DTYPES)}.")
    if act not in ACT_DTYPES:
      raise ValueError(f"{where}: activation dtype {act!r}; "
                       f"{did_you_mean(act, ACT_DTYPES)}use one of"
                       f" {list(ACT_DTYPES)} ('none': weights only).")
    try:  # qwix's own parser of the calibration method, on a tiny array
      qwix.quantize(jnp.ones((2, 2)), jnp.int8, calibration_method=calibration)
    except (ValueError, IndexError, AttributeError) as e:
      raise ValueError(f"{where}: calibration {calibration!r} is not one qwix"
                       " knows (absmax[,S] | minmax[,S] | rms,S | fixed,A,B):"
                       f" {e}") from None
    parsed.append((path, weight, act, calibration))
  return parsed


def qat_rules(rules) -> list[qwix.QtRule]:
  return [qwix.QtRule(module_path=p, weight_qtype=WEIGHT_DTYPES[w],
                      act_qtype=ACT_DTYPES[a], weight_calibration_method=c)
          for p, w, a, c in parse_rules(rules)]


def ptq_rules(rules) -> list[qwix.QuantizationRule]:
  return [qwix.QuantizationRule(
      module_path=p, weight_qtype=WEIGHT_DTYPES[w], act_qtype=ACT_DTYPES[a],
      weight_calibration_method=c) for p, w, a, c in parse_rules(rules)]


class PtqProvider(qwix.PtqProvider):
  """qwix's PtqProvider, with weights-only convolutions.

  qwix 0.1.8's PTQ convolution quantises both operands to one type and
  refuses a rule without activations, and XLA:CPU cannot compile the int4 x
  int4 convolution that an int4 rule with activations gives ("does not
  support custom element sizes on non-sub-byte types"). Under a weights-only
  rule this provider quantises the kernel exactly as qwix does (the same
  stored QArray, found and replaced by qwix's own helpers) and passes float
  activations and that QArray to `qwix.conv_general_dilated`, which
  dequantises the kernel: low-bit weights on disk, float arithmetic.
  """

  def conv_general_dilated(self, lhs, rhs, window_strides, padding,
                           lhs_dilation=None, rhs_dilation=None,
                           dimension_numbers=None, feature_group_count=1,
                           batch_group_count=1, precision=None,
                           preferred_element_type=None, out_sharding=None):
    args = (lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation,
            dimension_numbers, feature_group_count, batch_group_count)
    rule = self._get_current_rule_and_op_id(_CONV, only_rule=True)[0]
    if rule is None or rule.weight_qtype is None or rule.act_qtype is not None:
      return super().conv_general_dilated(
          *args, precision=precision,
          preferred_element_type=preferred_element_type,
          out_sharding=out_sharding)
    if isinstance(rhs, qwix_ptq.WithAux):  # restored: already quantised
      kernel = rhs.array
    else:
      numbers = jax.lax.conv_dimension_numbers(lhs.shape, rhs.shape,
                                               dimension_numbers)
      how = qwix_conv.get_how_to_quantize(
          dimension_numbers=numbers, for_lhs=False, qtype=rule.weight_qtype,
          calibration_method=rule.weight_calibration_method)
      kernel = qwix_ptq.create_quantized_param(
          qwix_flax.find_param(rhs), rhs, how).array
    return qwix.conv_general_dilated(
        lhs, kernel, *args[2:], preferred_element_type=preferred_element_type,
        out_sharding=out_sharding)


def check_mode(qcfg) -> None:
  check_choice("config.quantization.mode", qcfg.mode, MODES, "a quantisation mode")
  if qcfg.mode != "none":
    parse_rules(qcfg.rules)


def training_model(qcfg, model: nn.Module) -> nn.Module:
  """The model a run trains: under mode "qat" wrapped by qwix's QtProvider
  (fake quantisation in the forward pass, straight-through gradients; the
  parameters stay float32 and are stored as such), else `model` itself."""
  check_mode(qcfg)
  if qcfg.mode != "qat":
    return model
  return qwix.quantize_model(model, qwix.QtProvider(qat_rules(qcfg.rules)))


def ptq_model(rules, model: nn.Module) -> tuple[nn.Module, PtqProvider]:
  """(model, provider) of qwix's PTQ: the model's dense products and
  convolutions on quantised weights (QArray params)."""
  provider = PtqProvider(ptq_rules(rules))
  return qwix.quantize_model(model, provider), provider


def unquantized(model: nn.Module) -> nn.Module:
  """The model before qwix wrapped it (qwix keeps the class it replaced)."""
  base = getattr(type(model), "_unquantized_type", None)
  if base is None:
    return model
  return base(**{f: getattr(model, f) for f in model.__dataclass_fields__
                 if f not in ("parent", "name")})


def check(qcfg, task, kernels=None, *, key="config.quantization.rules") -> None:
  """Traces the quantised model's init abstractly (nothing compiles) and
  raises ValueError naming the rule that matches no module, or what qwix
  refuses. `task` is the run's (its model may already be wrapped)."""
  if qcfg.mode == "none":
    return
  check_rules(qcfg.rules, task, qcfg.mode, kernels, key=key)


def check_rules(rules, task, mode: str, kernels=None, *,
                key="config.quantization.rules") -> None:
  """`check` for `rules` (named `key` in errors: the config's, or a
  `--quantize` preset's) in `mode` "qat" or "ptq"."""
  parsed = parse_rules(rules, key)
  base = unquantized(task.model)
  if mode == "qat":
    provider = qwix.QtProvider(qat_rules(rules))
    probe = qwix.quantize_model(base, provider)
  else:
    probe, provider = ptq_model(rules, base)
    kernels = PTQ_KERNELS
  try:
    with layers.Kernels(kernels):
      jax.eval_shape(dataclasses.replace(task, model=probe).init_variables,
                     jax.random.PRNGKey(0))
  except (ValueError, TypeError) as e:  # qwix's checks; lax's dtype checks
    raise ValueError(f"{key}={tuple(map(tuple, rules))}: qwix refuses the"
                     f" {mode} model: {e}") from e
  unused = [any(r is u for u in provider.get_unused_rules())
            for r in provider._rules]  # pylint: disable=protected-access
  for i, rule in enumerate(parsed):
    if unused[i]:
      raise ValueError(
          f"{key}[{i}]={tuple(rules[i])}: the regex {rule[0]!r} matches no"
          " dense product or convolution of the model (or an earlier rule"
          " takes them all); module paths are flax's, joined by '/', e.g."
          f" {_module_paths(task)[:6]}.")


def _module_paths(task) -> list[str]:
  """The module paths that hold parameters, as qwix matches them."""
  shapes = jax.eval_shape(task.init_variables, jax.random.PRNGKey(0))
  paths = set()
  for path, _ in jax.tree_util.tree_flatten_with_path(nn.unbox(shapes["params"]))[0]:
    names = [getattr(k, "key", str(k)) for k in path[:-1]]
    paths.add("/".join(names))
  return sorted(paths)


def quantize_params(task, params, kernels=PTQ_KERNELS):
  """qwix.quantize_params of float `params` (unboxed) for the PTQ model of
  `task`: {name: WithAux(QArray(qvalue, scale))} where a rule matched, the
  float array elsewhere (biases, norms, embeddings looked up by index)."""
  with layers.Kernels(kernels):
    abstract = jax.eval_shape(task.init_variables, jax.random.PRNGKey(0))
  return qwix.quantize_params(params, abstract["params"])


def abstract_quantized(task, params_shapes, kernels=PTQ_KERNELS):
  """The tree `quantize_params` returns, as shapes: what `restore` fills."""
  with layers.Kernels(kernels):
    abstract = jax.eval_shape(task.init_variables, jax.random.PRNGKey(0))
  return jax.eval_shape(lambda p: qwix.quantize_params(p, abstract["params"]),
                        params_shapes)


def _flat(tree) -> dict:
  return {jax.tree_util.keystr(path, simple=True, separator="/"): leaf
          for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _checksums(flat: dict) -> dict:
  """checkpoint.checksums, int4 values widened to int8 first (its words
  are whole bytes)."""
  return checkpoint.checksums({
      name: x.astype(jnp.int8) if x.dtype == jnp.int4 else x
      for name, x in flat.items()})


def save(directory: str, variables: dict, manifest: dict,
         config_json: str) -> int:
  """Writes `variables` ({"params": quantised params, "state": model state})
  to `directory` as a flat dict of arrays (orbax; int8 and int4 stored
  natively) with checksums in MANIFEST, and the config that rebuilds the PTQ
  model beside it. Replaces an earlier one; returns the bytes on disk."""
  if os.path.exists(directory):
    shutil.rmtree(directory)
  os.makedirs(directory)
  flat = _flat(variables)
  arrays = {name: {"dtype": str(x.dtype), "shape": list(x.shape)}
            for name, x in flat.items()}
  for name, sums in _checksums(flat).items():
    arrays[name]["checksum"] = sums
  ckpt = ocp.StandardCheckpointer()
  ckpt.save(os.path.join(directory, "arrays"), flat)
  ckpt.wait_until_finished()
  ckpt.close()
  files.write_atomic(os.path.join(directory, "config.json"), config_json)
  record = {**manifest, "algorithm": checkpoint.ALGORITHM, "arrays": arrays}
  files.write_atomic(os.path.join(directory, MANIFEST),
                     json.dumps(record, indent=2, sort_keys=True))
  return bytes_on_disk(os.path.join(directory, "arrays"))


def is_quantized_dir(directory: str) -> bool:
  return os.path.exists(os.path.join(directory, MANIFEST))


def read_manifest(directory: str) -> dict:
  with open(os.path.join(directory, MANIFEST)) as f:
    return json.load(f)


def restore(directory: str, abstract_variables, sharding) -> dict:
  """The tree `save` wrote, onto `abstract_variables`' structure (from
  `abstract_quantized`), each array on `sharding` and checked against its
  checksum; raises checkpoint.CorruptCheckpointError naming a damaged one."""
  names = _flat(abstract_variables)
  record = read_manifest(directory)
  target = {name: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding)
            for name, x in names.items()}
  missing = sorted(set(target) - set(record["arrays"]))
  if missing:
    raise ValueError(f"{directory}: the stored quantised tree lacks {missing};"
                     " was it written for another model or rules?")
  ckpt = ocp.StandardCheckpointer()
  flat = ckpt.restore(os.path.join(directory, "arrays"), target)
  ckpt.close()
  problems = [f"{name} differs from its recorded checksum"
              for name, sums in _checksums(flat).items()
              if sums != record["arrays"][name]["checksum"]]
  if problems:
    raise checkpoint.CorruptCheckpointError(directory, {record["step"]: problems})
  leaves, treedef = jax.tree_util.tree_flatten(abstract_variables)
  del leaves
  return jax.tree_util.tree_unflatten(treedef, [flat[n] for n in names])


def bytes_on_disk(path: str) -> int:
  """Sum of the sizes of the files under `path` (what `du -sb` counts for
  the files themselves)."""
  total = 0
  for folder, _, names in os.walk(path):
    total += sum(os.path.getsize(os.path.join(folder, n)) for n in names)
  return total


def describe(params) -> dict:
  """{"int8": n, "int4": n, "float32": n, ...}: parameter counts by stored
  dtype (scales counted under their float type)."""
  counts = {}
  for x in jax.tree.leaves(params):
    counts[str(x.dtype)] = counts.get(str(x.dtype), 0) + int(np.prod(x.shape))
  return counts
