"""python -m deeplearn.inspect --config EXPERIMENT [--topology v5e:4x4]"""

import contextlib
import json

from absl import flags
import jax
import tensorflow_datasets as tfds

from deeplearn import cli, config as config_lib, train
from deeplearn.inspect import inspect_step
from deeplearn.inspect.report import format_report
from deeplearn.inspect.topology import TOPOLOGY_EXAMPLES


def main():
  config_flag = config_lib.define_config_flag()
  topology = flags.DEFINE_string(
      "topology", None, "Compile for this TPU slice instead, e.g. v5e:4x4"
      f" ({TOPOLOGY_EXAMPLES}); needs libtpu: pip install -e '.[tpu]'.")
  cpu_devices = flags.DEFINE_integer(
      "cpu_devices", 8, "Simulated CPU devices to compile for (no"
      " --topology, on a CPU).")
  json_path = flags.DEFINE_string("json", None, "Also write the numbers here.")
  top = flags.DEFINE_integer("top", 12, "Largest collectives to list.")
  mock_data = flags.DEFINE_bool(
      "mock_data", False, "Take the dataset's shapes from TFDS mock data"
      " (tfds.testing.mock_data): for a catalog dataset not prepared here,"
      " e.g. imagenet2012; a compile needs only its shapes.")
  flags.mark_flags_as_required(["config"])
  jax.config.config_with_absl()

  def run(argv):
    del argv
    train.quiet_library_logs()
    if not topology.value:
      jax.config.update("jax_num_cpu_devices", cpu_devices.value)
    context = contextlib.nullcontext()
    if mock_data.value:
      context = tfds.testing.mock_data(num_examples=16)
    with context:
      report = inspect_step(config_flag.value, topology=topology.value,
                            config_name=flags.FLAGS["config"].serialize()
                            .partition("=")[2])
    print(format_report(report, top.value), flush=True)
    if json_path.value:
      with open(json_path.value, "w") as f:
        json.dump(report.to_json(), f, indent=2)

  cli.run(run)


if __name__ == "__main__":
  main()
