"""Orbax checkpoints of the whole run: train state + data iterator position.

One checkpoint per saved step under WORKDIR/checkpoints/<step>/ with two
items: `state` (params, optimizer state, model state, PRNG key, step) and
`data` (the grain iterator's state, one file per process). Saving the
iterator is what makes a resumed run see the same batches as an
uninterrupted one. Saves are asynchronous; orbax commits a step atomically
(tmp folder, then rename), so `latest_step()` only ever names whole ones.
"""

import os

import grain
import jax
import orbax.checkpoint as ocp


class Checkpointer:

  def __init__(self, workdir: str, *, keep: int = 2,
               config_json: str | None = None):
    self.config_json = config_json
    self.directory = os.path.join(os.path.abspath(workdir), "checkpoints")
    self.manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True),
        item_names=("state", "data"))

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def save(self, step: int, state, data_iterator) -> None:
    self.manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state),
        data=grain.checkpoint.CheckpointSave(data_iterator)))

  def restore(self, step: int, abstract_state, data_iterator=None):
    """Restores onto `abstract_state`'s shapes and shardings (any mesh)."""
    items = {"state": ocp.args.StandardRestore(abstract_state)}
    if data_iterator is not None:
      items["data"] = grain.checkpoint.CheckpointRestore(data_iterator)
    restored = self.manager.restore(step, args=ocp.args.Composite(**items))
    return restored["state"]

  def restore_latest(self, abstract_state, data_iterator=None):
    """(state, step) of the newest checkpoint, or (None, None) if there is none."""
    step = self.latest_step()
    if step is None:
      return None, None
    return self.restore(step, abstract_state, data_iterator), step

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.close()


def abstract_with_shardings(state, shardings):
  return jax.tree.map(
      lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
      state, shardings)
