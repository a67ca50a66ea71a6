"""Evaluates a run's checkpoint: python -m deeplearn.evaluate --workdir runs/cnn

Reads the run's stored config (JSON, never executed), restores the newest
checkpoint (or --step) onto the devices present, and prints the eval metrics
of --split (default: the config's eval split). Writes nothing, except
with --quantize.

  --quantize int8|int4|config   post-training quantisation with qwix
      (deeplearn/quantization.py): evaluates the quantised model and writes
      it to WORKDIR/quantized/<name>/ (int8 / int4 arrays and their scales),
      beside the float weights stored the same way (WORKDIR/quantized/
      float32/), printing both sizes on disk. "config" takes the run's
      config.quantization.rules.
  --workdir WORKDIR/quantized/int8   evaluates that stored quantised model.
"""

import dataclasses
import json
import os

from absl import flags
import flax.linen as nn
import jax

from deeplearn import (cli, config as config_lib, data,
                       quantization, step as step_lib, train)
from deeplearn.schemes import supervised


def evaluate_checkpoint(workdir: str, step: int | None = None,
                        split: str | None = None, devices=None) -> dict:
  if quantization.is_quantized_dir(workdir):
    return evaluate_quantized(workdir, split, devices)
  finished = supervised.load_finished(workdir, devices, step=step,
                                      eval_split=split)
  run, config = finished.run, finished.config
  dataset = data.eval_dataset(config.data, process_index=jax.process_index(),
                              process_count=jax.process_count())
  metrics = step_lib.evaluate(run, step_lib.make_eval_step(run), finished.state,
                              dataset)
  return {"step": finished.step, "split": config.data.eval_split, **metrics}


def _read_config(workdir: str, split: str | None):
  with open(os.path.join(workdir, "config.json")) as f:
    config = config_lib.from_json(f.read())
  if split:
    config.data.eval_split = split
  return config


def _evaluate_variables(run, task, variables, kernels) -> dict:
  """The eval split's metrics of `task`'s model on `variables` ({"params",
  "state"}), replicated on the run's mesh."""

  def eval_step(variables, batch):
    with nn.logical_axis_rules(run.rules):
      return task.eval_sums(variables["params"], variables["state"], batch)

  jitted = step_lib.jit_step(eval_step, run.mesh,
                             (step_lib.replicated(run.mesh), run.batch_sharding),
                             donate=False, kernels=kernels)
  dataset = data.eval_dataset(run.config.data, process_index=jax.process_index(),
                              process_count=jax.process_count())
  return step_lib.evaluate(dataclasses.replace(run, task=task), jitted,
                           variables, dataset)


def quantize_checkpoint(workdir: str, name: str, step: int | None = None,
                        split: str | None = None, devices=None) -> dict:
  """Post-training quantisation (qwix) of the run in `workdir` at `step`
  (default: the newest): `name` is a quantization.PRESETS key or "config"
  (the run's config.quantization.rules). Evaluates the float and the
  quantised model, writes WORKDIR/quantized/<name>/ and .../float32/, and
  returns both metrics and sizes on disk."""
  config_lib.check_choice("--quantize", name, (*quantization.PRESETS, "config"))
  finished = supervised.load_finished(workdir, devices, step=step,
                                      eval_split=split)
  config, run, state, step = (finished.config, finished.run, finished.state,
                              finished.step)
  rules = (config.quantization.rules if name == "config"
           else quantization.PRESETS[name])
  key = ("config.quantization.rules" if name == "config"
         else f"--quantize={name}")
  base = dataclasses.replace(run.task,
                             model=quantization.unquantized(run.task.model))
  quantization.check_rules(rules, base, "ptq", key=key)
  params = state.params if state.avg_params is None else state.avg_params
  float_vars = {"params": params, "state": state.model_state}
  qtask = dataclasses.replace(
      base, model=quantization.ptq_model(rules, base.model)[0])
  qvars = {"params": quantization.quantize_params(qtask, params),
           "state": state.model_state}
  result = {"step": step, "split": config.data.eval_split, "quantize": name}
  result["float32"] = _evaluate_variables(run, base, float_vars,
                                          config.get("kernels"))
  result[name] = _evaluate_variables(run, qtask, qvars,
                                     quantization.PTQ_KERNELS)
  qconfig = config_lib.from_json(config_lib.to_json(config))
  qconfig.kernels.update(quantization.PTQ_KERNELS)
  qconfig.quantization.update(mode="ptq", rules=tuple(map(tuple, rules)))
  manifest = {"step": step, "source": os.path.abspath(workdir)}
  root = os.path.join(workdir, "quantized")
  sizes = {
      "float32": quantization.save(
          os.path.join(root, "float32"), float_vars,
          {**manifest, "rules": None}, config_lib.to_json(config)),
      name: quantization.save(
          os.path.join(root, name), qvars,
          {**manifest, "rules": [list(r) for r in rules]},
          config_lib.to_json(qconfig))}
  result["bytes_on_disk"] = sizes
  result["stored_params"] = {
      "float32": quantization.describe(float_vars["params"]),
      name: quantization.describe(qvars["params"])}
  return result


def evaluate_quantized(directory: str, split: str | None = None,
                       devices=None) -> dict:
  """Evaluates a model `quantize_checkpoint` stored (WORKDIR/quantized/
  <name>/), restored with its checksums checked."""
  config = _read_config(directory, split)
  manifest = quantization.read_manifest(directory)
  run = supervised.build(config, devices)
  task = dataclasses.replace(run.task,
                             model=quantization.unquantized(run.task.model))
  abstract = step_lib.abstract_state(run)
  params_shapes, kernels = abstract.params, config.get("kernels")
  if manifest["rules"] is not None:
    task = dataclasses.replace(
        task, model=quantization.ptq_model(manifest["rules"], task.model)[0])
    params_shapes = quantization.abstract_quantized(task, params_shapes)
    kernels = quantization.PTQ_KERNELS
  variables = quantization.restore(
      directory, {"params": params_shapes, "state": abstract.model_state},
      step_lib.replicated(run.mesh))
  metrics = _evaluate_variables(run, task, variables, kernels)
  return {"step": manifest["step"], "split": config.data.eval_split,
          "bytes_on_disk": quantization.bytes_on_disk(
              os.path.join(directory, "arrays")), **metrics}


def main():
  workdir = flags.DEFINE_string("workdir", None, "The run's workdir.")
  step = flags.DEFINE_integer("step", None, "Checkpoint step (default: newest).")
  split = flags.DEFINE_string("split", None, "Split to evaluate (default: the"
                              " config's eval split).")
  quantize = flags.DEFINE_string(
      "quantize", None, "Post-training quantisation with qwix: int8 | int4 |"
      " config (the run's config.quantization.rules); writes"
      " WORKDIR/quantized/<name>/.")
  flags.mark_flag_as_required("workdir")

  def run(argv):
    del argv
    train.quiet_library_logs()
    if quantize.value:
      result = quantize_checkpoint(workdir.value, quantize.value, step.value,
                                   split.value)
      sizes = result["bytes_on_disk"]
      print(f"bytes on disk: float32 {sizes['float32']:,} ->"
            f" {quantize.value} {sizes[quantize.value]:,}"
            f" ({sizes['float32'] / sizes[quantize.value]:.1f}x smaller) in"
            f" {os.path.join(workdir.value, 'quantized')}")
    else:
      result = evaluate_checkpoint(workdir.value, step.value, split.value)
    print(json.dumps(result, indent=2))

  cli.run(run)


if __name__ == "__main__":
  main()
