"""The decoder-only Transformer: the LM contract, causality, GPT-2's parameter
count, logical axis names under the FSDP x tensor-parallel rules, remat, scan
and bfloat16 variants, and FSDP x TP training equal to a one-device run."""

import functools
import os

import flax.linen as nn
import jax
import jax.extend
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from jax.sharding import PartitionSpec as P

from deeplearn import config as config_lib, metrics, models, step as step_lib, train
from deeplearn.schemes import supervised
from deeplearn.parallel import mesh as mesh_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FSDP_TP = os.path.join(ROOT, "experiments", "shakespeare_transformer_fsdp_tp.py")
SMALL = dict(name="transformer", vocab_size=11, max_len=8, num_layers=2,
             num_heads=2, embed_dim=8)


def make(**overrides):
  return models.get_model({**SMALL, **overrides})


def init(model, batch=2, length=8):
  """Random tokens and parameters of the model's shapes, drawn by numpy:
  compiling the model's own initialiser (many PRNG calls) takes seconds."""
  rng = np.random.default_rng(0)
  tokens = jnp.asarray(rng.integers(0, model.vocab_size, (batch, length)))
  shapes = nn.unbox(abstract_variables(model, length))
  return tokens, jax.tree.map(
      lambda s: jnp.asarray(rng.normal(0.0, 0.3, s.shape), s.dtype), shapes)


def forward(model, variables, tokens):
  # Jitted: op-by-op dispatch would compile every op on its own, slowly.
  return jax.jit(functools.partial(model.apply, train=False))(variables, tokens)


def abstract_variables(model, length):
  """Boxed (logically named) variables as shapes only: nothing is allocated."""
  return jax.eval_shape(lambda: model.init(
      jax.random.PRNGKey(0), jnp.zeros((1, length), jnp.int32), train=False))


def count(tree):
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nn.unbox(tree)))


def formula(vocab, context, layers, d, mlp, tied=True, pad=1):
  rows = -(-vocab // pad) * pad
  block = (2 * 2 * d  # two LayerNorms, scale and bias
           + 3 * (d * d + d) + d * d + d  # Q, K, V and output, with biases
           + d * mlp + mlp + mlp * d + d)  # MLP, with biases
  return rows * d + context * d + layers * block + 2 * d + (0 if tied else d * rows)


def test_logits_are_float32_batch_time_vocab():
  # Padded vocabulary rows (11 -> 16) never reach the logits.
  model = make(vocab_pad_multiple=8)
  tokens, variables = init(model, batch=3, length=5)
  logits = forward(model, variables, tokens)
  assert logits.shape == (3, 5, 11) and logits.dtype == jnp.float32


def test_a_token_changes_no_earlier_logit():
  model = make()
  tokens, variables = init(model)
  t = 5
  changed = tokens.at[:, t].set((tokens[:, t] + 1) % model.vocab_size)
  before = forward(model, variables, tokens)
  after = forward(model, variables, changed)
  np.testing.assert_allclose(before[:, :t], after[:, :t], rtol=0, atol=1e-6)
  for s in range(t, tokens.shape[1]):  # the token's own and later positions see it
    assert np.abs(before[:, s] - after[:, s]).max() > 1e-4


@pytest.mark.parametrize("overrides", [
    {}, {"tie_embeddings": False}, {"mlp_dim": 12, "vocab_pad_multiple": 4},
    {"scan_layers": True, "num_layers": 3}])
def test_parameter_count_matches_the_formula(overrides):
  model = make(**overrides)
  expected = formula(11, 8, model.num_layers, 8, model.mlp_dim or 32,
                     tied=model.tie_embeddings, pad=model.vocab_pad_multiple)
  assert count(abstract_variables(model, 8)) == expected


def test_gpt2_small_sizes_have_gpt2_small_parameter_count():
  for scan_layers in (False, True):
    model = models.get_model({"name": "transformer", "vocab_size": 50257,
                              "max_len": 1024, "scan_layers": scan_layers})
    assert count(abstract_variables(model, 8)) == 124_439_808  # Radford et al.


def _names_and_specs(variables, rules):
  """(path, logical names, shape, mesh PartitionSpec) of every parameter."""
  leaves = jax.tree_util.tree_flatten_with_path(
      variables["params"], is_leaf=lambda x: isinstance(x, nn.Partitioned))[0]
  for path, leaf in leaves:
    name = jax.tree_util.keystr(path, simple=True, separator="/")
    assert isinstance(leaf, nn.LogicallyPartitioned), f"{name} has no logical names"
    assert len(leaf.names) == leaf.value.ndim and all(
        isinstance(n, str) for n in leaf.names), (name, leaf.names)
    yield name, leaf.names, leaf.value.shape, nn.logical_to_mesh_axes(leaf.names, rules)


def _mesh_axes(axes):
  return (axes,) if isinstance(axes, str) else tuple(axes or ())


@pytest.mark.parametrize("overrides", [{}, {"scan_layers": False},
                                       {"tie_embeddings": False}])
def test_fsdp_tp_rules_name_every_parameter_and_never_repeat_a_mesh_axis(overrides):
  config = config_lib.from_file(FSDP_TP + ":tiny")
  config.model.update(overrides)
  rules = dict(config.sharding.rules)
  variables = abstract_variables(models.get_model(config.model), 8)
  specs = {}
  for name, names, _, spec in _names_and_specs(variables, config.sharding.rules):
    used = [a for axes in spec for a in _mesh_axes(axes)]
    assert len(used) == len(set(used)), f"{name}: {spec} repeats a mesh axis"
    # Every name with a rule got its mesh axis: none was dropped because an
    # earlier dimension had taken it (flax then leaves it replicated silently).
    assert tuple(spec) == tuple(rules.get(n) for n in names), (name, names, spec)
    specs[name] = spec
  layer = (None,) if config.model.scan_layers else ()
  block = "blocks" if config.model.scan_layers else "block_0"
  assert specs["wte/embedding"] == P("model", "fsdp")  # vocabulary parallel
  assert specs[f"{block}/attn/query/kernel"] == P(*layer, "fsdp", "model", None)
  assert specs[f"{block}/attn/out/kernel"] == P(*layer, "model", None, "fsdp")
  assert specs[f"{block}/mlp/fc/kernel"] == P(*layer, "fsdp", "model")
  assert specs[f"{block}/mlp/proj/kernel"] == P(*layer, "model", "fsdp")


@pytest.mark.parametrize("variant", ["tiny", "small", "gpt2", "gpt2_medium"])
def test_fsdp_tp_variants_split_every_parameter_evenly(variant):
  config = config_lib.from_file(f"{FSDP_TP}:{variant}")
  sizes = mesh_lib.mesh_shape(config.mesh.to_dict(), 8)
  model = models.get_model(config.model)
  variables = abstract_variables(model, config.data.seq_len)
  for name, _, shape, spec in _names_and_specs(variables, config.sharding.rules):
    for dim, axes in zip(shape, spec):
      split = int(np.prod([sizes[a] for a in _mesh_axes(axes)]))
      assert dim % split == 0, f"{variant}: {name} {shape} over {spec}"
  if variant.startswith("gpt2"):
    assert count(variables) == formula(
        65, 1024, model.num_layers, model.embed_dim, 4 * model.embed_dim, pad=64)


def _loss_fn(model, tokens):
  def loss(params):
    logits = model.apply({"params": params}, tokens, train=True,
                         rngs={"dropout": jax.random.PRNGKey(2)})
    return optax.softmax_cross_entropy_with_integer_labels(
        logits[:, :-1], tokens[:, 1:]).mean()
  return jax.value_and_grad(loss)


def _loss_and_grads(model, variables, tokens):
  return jax.jit(_loss_fn(model, tokens))(variables["params"])


def test_remat_gives_the_loss_and_grads_of_no_remat():
  # Dropout on: the recomputed forward pass must draw the same masks.
  plain = make(dropout_rate=0.1, num_layers=1)
  tokens, variables = init(plain)
  loss, grads = _loss_and_grads(plain, variables, tokens)
  for remat in ("full", "dots"):
    loss_r, grads_r = _loss_and_grads(
        make(dropout_rate=0.1, num_layers=1, remat=remat), variables, tokens)
    np.testing.assert_allclose(loss_r, loss, rtol=1e-6)
    for a, b in zip(jax.tree.leaves(grads_r), jax.tree.leaves(grads)):
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_scanned_layers_compute_what_the_unrolled_layers_do():
  unrolled = make(num_layers=3)
  tokens, variables = init(unrolled)
  params = dict(variables["params"])
  blocks = [params.pop(f"block_{i}") for i in range(3)]
  params["blocks"] = jax.tree.map(lambda *xs: jnp.stack(xs), *blocks)
  scanned = make(num_layers=3, scan_layers=True, remat="dots")
  np.testing.assert_allclose(forward(scanned, {"params": params}, tokens),
                             forward(unrolled, variables, tokens),
                             rtol=1e-5, atol=1e-5)


def _equations(jaxpr):
  for eqn in jaxpr.eqns:  # including those inside jit / scan / remat
    yield eqn
    for sub in jax.extend.core.jaxprs_in_params(eqn.params):
      yield from _equations(sub)


def test_bfloat16_computes_in_bfloat16_and_keeps_float32_params():
  model = make(dtype="bfloat16")
  tokens, variables = init(model)
  assert {x.dtype for x in jax.tree.leaves(variables)} == {jnp.dtype("float32")}
  jaxpr = jax.make_jaxpr(lambda v: model.apply(v, tokens, train=False))(variables)
  dots = [e for e in _equations(jaxpr.jaxpr) if e.primitive.name == "dot_general"]
  assert dots and all(v.aval.dtype == jnp.bfloat16 for e in dots for v in e.invars)
  _, grads = jax.eval_shape(_loss_fn(model, tokens), variables["params"])
  assert {x.dtype for x in jax.tree.leaves(grads)} == {jnp.dtype("float32")}
  np.testing.assert_allclose(forward(model, variables, tokens),
                             forward(make(), variables, tokens), atol=0.05)


def test_sequences_longer_than_max_len_are_refused():
  model = make()
  _, variables = init(model)
  with pytest.raises(ValueError, match="max_len=8"):
    forward(model, variables, jnp.zeros((1, 9), jnp.int32))


def test_activation_constraints_act_only_with_rules_and_a_mesh_in_context():
  config = config_lib.from_file(FSDP_TP + ":tiny")
  config.model.scan_layers = False
  model = models.get_model(config.model)
  mesh = mesh_lib.make_mesh(config.mesh.to_dict())
  params = nn.unbox(abstract_variables(model, 32))
  tokens = jax.ShapeDtypeStruct((16, 32), jnp.int32)
  apply = jax.jit(lambda v, x: model.apply(v, x, train=False))

  def constraints():
    text = apply.lower(params, tokens).as_text()
    return text.count("sharding_constraint") + text.count("@Sharding")

  assert constraints() == 0
  with nn.logical_axis_rules(config.sharding.rules):
    assert constraints() == 0  # rules alone, no mesh: flax drops them
    with jax.set_mesh(mesh):
      # Per block: q, k, v, attention out, MLP hidden, two residuals; plus
      # the embeddings and the logits.
      assert constraints() == 7 * config.model.num_layers + 2


def test_train_step_applies_the_activation_constraints(tfds_data_dir):
  config = config_lib.from_file(FSDP_TP + ":tiny")
  config.data.data_dir = tfds_data_dir
  run = supervised.build(config)
  state = step_lib.abstract_state(run)
  tokens = jax.ShapeDtypeStruct((config.data.batch_size, config.data.seq_len),
                                jnp.int32, sharding=run.batch_sharding)
  text = step_lib.make_train_step(run).lower(
      state, {"inputs": tokens, "targets": tokens}).as_text()
  assert text.count("sharding_constraint") + text.count("@Sharding") > 0


def _train_losses(workdir):
  records = metrics.read_records(os.path.join(workdir, "metrics.jsonl"), "train")
  return np.array([r["loss"] for r in records])


def test_fsdp_tp_training_on_8_devices_matches_one_device(tfds_data_dir, tmp_path):
  config = config_lib.from_file(FSDP_TP + ":tiny")
  config.data.data_dir = tfds_data_dir
  config.train.progress = False
  run = supervised.build(config)
  assert dict(run.mesh.shape) == {"data": 2, "fsdp": 2, "stage": 1, "expert": 1,
                                  "model": 2}
  query = run.state_shardings.params["blocks"]["attn"]["query"]["kernel"]
  assert query.spec == P(None, "fsdp", "model", None)
  sharded = train.train_and_evaluate(config, str(tmp_path / "fsdp_tp"))

  one = config_lib.from_file(FSDP_TP + ":tiny")
  one.data.data_dir = tfds_data_dir
  one.train.progress = False
  one.mesh = ml_collections.ConfigDict({"data": -1})
  one.sharding.rules = config_lib.DATA_PARALLEL_RULES
  single = train.train_and_evaluate(one, str(tmp_path / "one"),
                                    devices=jax.devices()[:1])
  assert sharded["devices"] == 8 and single["devices"] == 1
  losses = _train_losses(tmp_path / "fsdp_tp")
  assert len(losses) == config.train.num_steps and losses[-1] < losses[0]
  np.testing.assert_allclose(losses, _train_losses(tmp_path / "one"), rtol=1e-4)
  np.testing.assert_allclose(sharded["final"]["loss"], single["final"]["loss"],
                             rtol=1e-4)
