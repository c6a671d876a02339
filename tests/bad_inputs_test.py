"""The bad-input catalogue: every case gets a clear, actionable error.

`API_CASES` (run in this process) and `BINARY_CASES` (run as
`python3 tools/train.py ...` subprocesses) are the single list of cases;
docs/bad_inputs.md shows them as a table, regenerated with

  python3 tests/reliability_bad_inputs_doc.py > docs/bad_inputs.md

and `DocTest` checks that the table lists exactly these case ids. Each case
asserts the exception type (or the binary's non-zero exit), a regex that the
message states the problem and a regex that it states the fix. `RECOVERY_CASES`
are damaged checkpoints that must be detected and skipped, never loaded.
"""

import errno
import os
import re
import sys
import tempfile
from typing import Any, Callable, NamedTuple, Sequence, Type
from unittest import mock

from absl import logging
from absl.testing import absltest
from absl.testing import parameterized
import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import optax

import pax_haiku as pax
from pax_haiku._src.nn import _checks
from configs import smoke
from tools.trainer import checkpoint
from tools.trainer import config_schema
from tools.trainer import models
from tools.trainer import resume_config
from tools.trainer import storage_checks
from tools.trainer import tasks
from tools.trainer import train_lib
from tools.trainer import workdir_lock
import launch  # tests/launch.py, beside this file
import quick_exit  # tests/quick_exit.py, beside this file

ROOT = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
TRAIN = os.path.join(ROOT, "tools", "train.py")
SMOKE = os.path.join(ROOT, "configs", "smoke.py")
DOC = os.path.join(ROOT, "docs", "bad_inputs.md")


class Case(NamedTuple):
  """One bad input.

  Attributes:
    id: unique snake_case id, listed in docs/bad_inputs.md.
    area: the API or tool the input goes to.
    bad_input: what the user does wrong (for the doc table).
    error: the expected exception type.
    problem: regex the message must match: what is wrong.
    fix: regex the message must match: how to fix it.
    fn: raises the error when called (gets a scratch directory).
  """
  id: str
  area: str
  bad_input: str
  error: Type[BaseException]
  problem: str
  fix: str
  fn: Callable[[str], Any]


class BinaryCase(NamedTuple):
  """A bad command line for tools/train.py (exits non-zero, no traceback).

  `argv` may contain `{workdir}` and `{file}` (an existing regular file).
  """
  id: str
  area: str
  bad_input: str
  argv: Sequence[str]
  problem: str
  fix: str


# ----------------------------------------------------------------------------
# Fixtures used by the cases.
# ----------------------------------------------------------------------------


def _x(*shape, dtype=jnp.float32):
  return jnp.ones(shape, dtype)


def _net():
  return pax.Linear(3, 2, rng_key=jax.random.PRNGKey(0))


def _mse(model, x):
  y = model(x)
  loss = jnp.mean(jnp.square(y))
  return loss, (loss, model)


def _optimizer(net):
  return pax.from_optax(optax.sgd(0.1))(net.parameters())


def _loss_only(model, x):
  return jnp.mean(model(x))


def _loss_and_aux(model, x):
  return jnp.mean(model(x)), 1.0


def _model_aux_swapped(model, x):
  return jnp.mean(model(x)), (model, 1.0)


def _per_example_loss(model, x):
  return jnp.sum(model(x), axis=-1), (None, model)


def _returns_other_model(model, x):
  return jnp.mean(model(x)), (None, pax.Linear(3, 2, with_bias=False))


def _vector_loss(model, x):
  return model(x)


def _int_loss(model, x):
  return jnp.sum(model(x)).astype(jnp.int32)


def _python_int_loss(model, x):
  del model, x
  return 1


def _setattr(module, name, value):
  setattr(module, name, value)


def _class_with_array_attribute():
  class Bad(pax.Module):
    w = jnp.ones(2)

  return Bad()


def _class_with_plain_parameters():
  class Bad(pax.Module):  # pylint: disable=unused-variable

    def parameters(self):
      return self


class _Shared(pax.Module):

  def __init__(self):
    super().__init__()
    layer = pax.Linear(2, 2)
    self.a = layer
    self.b = layer


def _mutate_inside_inner_jit(_):
  net = _net()

  @pax.pure
  def f(m):
    def inner(x):
      m.weight = m.weight + x
      return x
    jax.jit(inner)(1.0)
    return m

  f(net)


def _text_file(dirname):
  path = os.path.join(dirname, "notes.txt")
  with open(path, "w") as f:
    f.write("not weights")
  return path


def _save_model(dirname, module):
  path = os.path.join(dirname, "model.npz")
  pax.save(path, module)
  return path


def _smoke(**overrides):
  config = smoke.get_config()
  config.unlock()
  for key, value in overrides.items():
    target = config
    *parents, leaf = key.split(".")
    for p in parents:
      target = target[p]
    target[leaf] = value
  return config


def _write_checkpoint_of(config, directory, step=20):
  model = models.build_model(config)
  optimizer = pax.from_optax(models.make_optimizer(config))(
      model.parameters())
  checkpoint.save(os.path.join(directory, "checkpoints"), step,
                  {"model": model, "optimizer": optimizer},
                  {"data": {}, "config_hash": "x"})


def _resume_other_model(tmp):
  _write_checkpoint_of(_smoke(**{"model_config.hidden_sizes": (32,)}), tmp)
  train_lib.train_and_evaluate(
      _smoke(**{"model_config.hidden_sizes": (16,)}), tmp)


def _resume_other_depth(tmp):
  _write_checkpoint_of(_smoke(**{"model_config.hidden_sizes": (32,)}), tmp)
  train_lib.train_and_evaluate(
      _smoke(**{"model_config.hidden_sizes": (32, 32)}), tmp)


def _truncate(path, fraction=0.5):
  with open(path, "rb") as f:
    data = f.read()
  with open(path, "wb") as f:
    f.write(data[:int(len(data) * fraction)])


def _flip_byte(path):
  with open(path, "r+b") as f:
    f.seek(os.path.getsize(path) // 2)
    byte = f.read(1)
    f.seek(-1, os.SEEK_CUR)
    f.write(bytes([byte[0] ^ 0xFF]))


_TREE = {"w": np.arange(6, dtype=np.float32).reshape(2, 3),
         "n": np.int32(7)}


def _all_checkpoints_damaged(tmp):
  checkpoint.save(tmp, 10, _TREE)
  _truncate(checkpoint.array_files(checkpoint.checkpoint_path(tmp, 10))[0])
  checkpoint.restore_latest(tmp, like=_TREE)


def _restore_damaged_step(tmp):
  checkpoint.save(tmp, 10, _TREE)
  _truncate(checkpoint.array_files(checkpoint.checkpoint_path(tmp, 10))[0])
  checkpoint.restore(tmp, 10, like=_TREE)


def _restore_with_more_leaves(tmp):
  leaves = [_TREE["w"], _TREE["n"]]
  checkpoint.save(tmp, 10, leaves)
  checkpoint.restore_latest(tmp, like=leaves + [np.zeros(3)])


def _restore_with_other_dtype(tmp):
  checkpoint.save(tmp, 10, _TREE)
  checkpoint.restore_latest(
      tmp, like=dict(_TREE, w=_TREE["w"].astype(np.float16)))


def _nonfinite_loss_fn_for(value):
  original = tasks.loss_fn_for

  def loss_fn_for(config):
    loss_fn = original(config)

    def bad_loss(model, batch):
      loss, (aux, model) = loss_fn(model, batch)
      # Added, not multiplied: the gradients stay finite, the loss does not.
      return loss + value, (dict(aux, loss=aux["loss"] + value), model)

    return bad_loss

  return loss_fn_for


def _train_with_nonfinite_loss(value):
  def run(tmp):
    original = train_lib.tasks.loss_fn_for
    train_lib.tasks.loss_fn_for = _nonfinite_loss_fn_for(value)
    try:
      train_lib.train_and_evaluate(
          _smoke(num_steps=10, eval_every=10, checkpoint_every=10), tmp)
    finally:
      train_lib.tasks.loss_fn_for = original
  return run


def _train_while_locked(tmp):
  # flock locks of two open files conflict within one process too.
  with workdir_lock.WorkdirLock(tmp):
    train_lib.train_and_evaluate(_smoke(num_steps=10, eval_every=10,
                                        checkpoint_every=10), tmp)


def _resume_with_sgd(tmp):
  train_lib.train_and_evaluate(_smoke(num_steps=10, checkpoint_every=10,
                                      eval_every=10), tmp)
  train_lib.train_and_evaluate(_smoke(num_steps=20, checkpoint_every=10,
                                      eval_every=10, optimizer="sgd"), tmp)


def _train_on_a_full_disk(tmp):
  with mock.patch("shutil.disk_usage", return_value=mock.Mock(free=1000)):
    train_lib.train_and_evaluate(_smoke(num_steps=10, eval_every=10,
                                        checkpoint_every=10), tmp)


def _train_with_read_only_checkpoints(tmp):
  os.makedirs(os.path.join(tmp, "checkpoints"))
  with mock.patch("builtins.open", _deny_in(os.path.join(tmp,
                                                          "checkpoints"))):
    train_lib.train_and_evaluate(_smoke(num_steps=10, eval_every=10,
                                        checkpoint_every=10), tmp)


def _deny_in(directory):
  real_open = open

  def fake_open(path, *args, **kwargs):
    if str(path).startswith(directory):
      raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), path)
    return real_open(path, *args, **kwargs)

  return fake_open


# ----------------------------------------------------------------------------
# The catalogue.
# ----------------------------------------------------------------------------

_NOT_MODULE = r"expects a pax\.Module, got (dict|int|list|function)"
_PASS_MODULE = r"Fix: pass a module"
_LOSS_FN_FIX = r"Fix: return the scalar loss.*return loss, \(loss, model\)"
_SCAN_FIX = r"Fix: pass `time_major=False`.*same number of steps"
_CKPT_FIX = r"Resume with the config it was written with, or use a new workdir"

API_CASES = (
    # -- non-module arguments -------------------------------------------------
    Case("grad_first_arg_dict", "pax.grad", "a Haiku params dict as the "
         "first argument", TypeError,
         r"first argument must be a pax\.Module.*got dict.*Haiku params dict",
         r"Fix: put the model first",
         lambda _: pax.grad(_loss_only)({"linear": {}}, _x(2, 3))),
    Case("value_and_grad_first_arg_array", "pax.value_and_grad",
         "an array as the first argument", TypeError,
         r"first argument must be a pax\.Module.*got ArrayImpl",
         r"Fix: put the model first.*pax\.from_haiku",
         lambda _: pax.value_and_grad(_loss_only)(_x(3), _x(2, 3))),
    Case("grad_not_callable", "pax.grad", "a non-callable instead of the "
         "loss function", TypeError, r"expects a function, got int",
         r"Fix: `pax\.grad\(loss_fn\)\(model, x, y\)`",
         lambda _: pax.grad(3)),
    Case("grad_argnums", "pax.grad", "`argnums=`", TypeError,
         r"`argnums`.*is not supported",
         r"Fix: make the values you want gradients for trainable",
         lambda _: pax.grad(_loss_only, argnums=1)),
    Case("grad_unknown_kwarg", "pax.grad", "an unknown keyword argument",
         TypeError, r"unexpected keyword arguments \['foo'\]",
         r"it accepts `has_aux` and the `jax\.grad` options",
         lambda _: pax.grad(_loss_only, foo=1)),
    Case("purecall_not_module", "pax.purecall", "a plain function as the "
         "module", TypeError, r"expects a pax\.Module as first argument, got "
         r"function", r"Fix: `model, y = pax\.purecall\(model, x\)`",
         lambda _: pax.purecall(lambda x: x, 1)),
    Case("pure_not_callable", "pax.pure", "a non-callable", TypeError,
         r"expects a function .*got int",
         r"Fix: decorate the function that calls the modules",
         lambda _: pax.pure(3)),
    Case("module_and_value_not_module", "pax.module_and_value",
         "a non-module", TypeError, r"got int",
         r"expects a module or a bound method of a module \(e\.g\. `net\.step`\)",
         lambda _: pax.module_and_value(3)),
    Case("select_parameters_not_module", "pax.select_parameters", "an int",
         TypeError, _NOT_MODULE, _PASS_MODULE,
         lambda _: pax.select_parameters(3)),
    Case("update_parameters_not_module", "pax.update_parameters",
         "a dict as the module", TypeError, _NOT_MODULE, _PASS_MODULE,
         lambda _: pax.update_parameters({"a": 1}, params={})),
    Case("freeze_parameters_list", "pax.freeze_parameters",
         "a list of modules", TypeError, _NOT_MODULE, _PASS_MODULE,
         lambda _: pax.freeze_parameters([_net()])),
    Case("to_haiku_function", "pax.to_haiku", "a plain function", TypeError,
         _NOT_MODULE, _PASS_MODULE + r".*pax\.from_haiku", lambda _: pax.to_haiku(lambda x: x)),
    Case("save_not_module", "pax.save", "a dict instead of a module",
         TypeError, _NOT_MODULE, _PASS_MODULE,
         lambda tmp: pax.save(os.path.join(tmp, "x.npz"), {"a": 1})),
    Case("from_haiku_int", "pax.from_haiku", "an int", TypeError,
         r"got int", r"expects a Haiku function, transform or hk\.Module "
         r"class", lambda _: pax.from_haiku(3)),
    Case("from_haiku_ctor_args_for_function", "pax.from_haiku",
         "constructor arguments with a plain function", TypeError,
         r"Constructor arguments are only for hk\.Module classes",
         r"pass sample inputs to the builder instead: `pax\.from_haiku\(f\)"
         r"\(x\)`", lambda _: pax.from_haiku(lambda x: x, 3)),
    Case("from_haiku_bad_rng_key", "pax.from_haiku", "`rng_key=3`",
         TypeError, r"rng_key must be a JAX PRNG key, got int",
         r"Fix: `rng_key=jax\.random\.PRNGKey\(0\)`",
         lambda _: pax.from_haiku(hk.Linear, 3)(_x(1, 2), rng_key=3)),
    Case("haiku_call_outside_transform", "pax.haiku_call",
         "calling it outside `hk.transform`", ValueError,
         r"must run inside a Haiku transform",
         r"Fix: use `pax\.to_haiku\(module\)`",
         lambda _: pax.haiku_call(_net(), _x(1, 3))),
    Case("sequential_not_callable", "pax.Sequential", "an int as a layer",
         TypeError, r"layers must be modules or functions, got int \(3\)",
         r"Fix: pass layers as separate arguments",
         lambda _: pax.Sequential(3)),
    Case("lambda_not_callable", "pax.Lambda", "a non-callable", TypeError,
         r"expects a callable, got int \(3\)",
         r"Fix: pass the function itself", lambda _: pax.Lambda(3)),
    # -- mutation outside pure ------------------------------------------------
    Case("setattr_outside_pure", "pax.Module", "`net.weight = w` outside "
         "`pax.pure`", ValueError,
         r"Cannot set attribute `weight` of `Linear`: pax modules are "
         r"immutable outside `pax\.pure`",
         r"Fix: do the update inside a function decorated with `pax\.pure`"
         r".*pax\.purecall\(model, x\)",
         lambda _: _setattr(_net(), "weight", _x(3, 2))),
    Case("delattr_outside_pure", "pax.Module", "`del net.weight` outside "
         "`pax.pure`", ValueError, r"Cannot delete attribute `weight`",
         r"Fix: do the update inside a function decorated with `pax\.pure`",
         lambda _: delattr(_net(), "weight")),
    Case("stateful_call_outside_pure", "pax.BatchNorm1D", "calling a "
         "training-mode BatchNorm outside `pax.pure`", ValueError,
         r"updates its state .* but the module is immutable here",
         r"Fix: `module, y = pax\.purecall\(module, x\)`.*module\.eval\(\)",
         lambda _: pax.BatchNorm1D(3)(_x(4, 2, 3))),
    Case("mutation_in_inner_jit", "pax.pure", "mutating a module inside a "
         "`jax.jit` nested in `pax.pure`", ValueError,
         r"immutable outside `pax\.pure` \(and inside a JAX transform nested "
         r"deeper", r"Fix: do the update inside a function decorated",
         _mutate_inside_inner_jit),
    Case("class_attribute_array", "pax.Module", "an array as a class "
         "attribute", ValueError, r"Class attribute `Bad\.w` holds a JAX array",
         r"Fix: assign it in `__init__`",
         lambda _: _class_with_array_attribute()),
    Case("parameters_not_parameters_method", "pax.Module", "overriding "
         "`parameters` with a plain method", TypeError,
         r"`Bad\.parameters` must be created with `pax\.parameters_method",
         r"Fix: `parameters = pax\.parameters_method\('weight', 'bias'\)`",
         lambda _: _class_with_plain_parameters()),
    Case("parameters_method_non_str", "pax.parameters_method", "an int "
         "attribute name", TypeError, r"expects attribute names \(str\), got 1",
         r"Fix: pax\.parameters_method\('weight', 'bias'\)",
         lambda _: pax.parameters_method(1)),
    Case("shared_submodule", "pax.Module", "one submodule stored in two "
         "attributes", ValueError, r"is reachable twice in the module tree",
         r"Fix: create separate modules", lambda _: _Shared()),
    Case("pure_returns_module_twice", "pax.pure", "returning the same "
         "module twice", ValueError, r"is reachable twice",
         r"Fix: create separate modules",
         lambda _: pax.pure(lambda m: (m, m))(_net())),
    Case("replace_unknown_attribute", "Module.replace", "`replace(foo=1)`",
         ValueError, r"`Linear` has no attribute `foo`.*\(in_dim, out_dim, "
         r"with_bias, bias, weight\)", r"Fix: add new attributes inside a "
         r"`pax\.pure` function", lambda _: _net().replace(foo=1)),
    Case("replace_node_not_found", "Module.replace_node", "a node that is "
         "not in the module", ValueError, r"found it 0 times",
         r"Fix: pass an array or submodule taken from this module",
         lambda _: _net().replace_node(_x(2), 1)),
    # -- mismatched params / state trees -------------------------------------
    Case("update_parameters_other_structure", "Module.update_parameters",
         "parameters of a model without bias", ValueError,
         r"does not have the structure of `module\.parameters\(\)`: the first "
         r"tree has an extra leaf at `\.bias`",
         r"Fix: pass `module\.parameters\(\)`",
         lambda _: _net().update_parameters(
             pax.Linear(3, 2, with_bias=False).parameters())),
    Case("update_parameters_wrong_shape", "Module.update_parameters",
         "a Haiku dict with a (4, 2) weight for a (3, 2) layer", ValueError,
         r"params\['linear'\]\['w'\] has shape \(4, 2\) but the module "
         r"expects \(3, 2\)", r"Fix: load weights of the same architecture",
         lambda _: _net().update_parameters(
             {"linear": {"w": _x(4, 2), "b": _x(2)}})),
    Case("update_parameters_missing_key", "Module.update_parameters",
         "a Haiku dict without the bias", ValueError,
         r"has no entry params\['linear'\]\['b'\] that the module needs",
         r"Fix: pass a mapping with the same keys as `module\.params`",
         lambda _: _net().update_parameters({"linear": {"w": _x(3, 2)}})),
    Case("update_parameters_extra_key", "Module.update_parameters",
         "a Haiku dict with an extra entry", ValueError,
         r"has an entry params\['linear'\]\['c'\] that the module does not "
         r"have", r"Fix: pass a mapping with the same keys",
         lambda _: _net().update_parameters(
             {"linear": {"w": _x(3, 2), "b": _x(2), "c": _x(1)}})),
    Case("update_parameters_list", "Module.update_parameters", "a list",
         TypeError, r"got list", r"expects `params` to be the output of "
         r"`module\.parameters\(\)` or a Haiku params mapping",
         lambda _: _net().update_parameters([1, 2])),
    Case("update_parameters_one_level_dict", "Module.update_parameters",
         "a one-level dict", TypeError,
         r"params\['linear'\] should be a mapping name -> array, got int",
         r"Haiku params are two-level: \{module_path: \{name: array\}\}",
         lambda _: _net().update_parameters({"linear": 3})),
    Case("update_state_extra_key", "Module.update_state", "state for a "
         "module without state", ValueError,
         r"has an entry state\['x'\]\['y'\] that the module does not have",
         r"Fix: pass a mapping with the same keys as `module\.state`",
         lambda _: _net().update_state({"x": {"y": _x(1)}})),
    Case("assert_structure_equal_differs", "pax.assert_structure_equal",
         "modules of different structure", ValueError,
         r"Structures differ: the first tree has an extra leaf at `\.bias`",
         r"extra leaf at `\.bias`",
         lambda _: pax.assert_structure_equal(
             _net(), pax.Linear(3, 2, with_bias=False))),
    Case("optimizer_for_other_model", "Optimizer.step", "an optimizer built "
         "for a model with bias, stepping one without", ValueError,
         r"the parameters do not have the structure this optimizer was "
         r"created for: the (first|second) tree has an extra leaf at `\.bias`",
         r"Fix: build the optimize",
         lambda _: _optimizer(_net()).step(
             pax.Linear(3, 2, with_bias=False),
             pax.Linear(3, 2, with_bias=False).parameters())),
    Case("load_other_layer_size", "pax.load", "a checkpoint of Linear(3, 2) "
         "into Linear(3, 5)", ValueError,
         r"params\['linear'\]\['b'\] has shape \(2,\) but the module "
         r"expects \(5,\)", r"Fix: load weights of the same architecture",
         lambda tmp: pax.load(_save_model(tmp, _net()), pax.Linear(3, 5))),
    Case("load_other_architecture", "pax.load", "a Linear checkpoint into a "
         "Conv2D", ValueError, r"has no entry params\['conv2_d'\]\['b'\]",
         r"Fix: pass a mapping with the same keys as `module\.params`",
         lambda tmp: pax.load(_save_model(tmp, _net()),
                              pax.Conv2D(1, 2, 3))),
    # -- shapes and dtypes into layers --------------------------------------
    Case("linear_wrong_input_size", "pax.Linear", "(4, 5) inputs into "
         "Linear(3, 2)", ValueError,
         r"Linear\(in_dim=3, out_dim=2, with_bias=True\) expects inputs of "
         r"shape \(\.\.\., 3\), got \(4, 5\)",
         r"Fix: check the previous layer's output size or this layer's in_dim",
         lambda _: _net()(_x(4, 5))),
    Case("sequential_mismatched_layers", "pax.Sequential", "Linear(3, 4) "
         "followed by Linear(5, 2)", ValueError,
         r"Linear\(in_dim=5, out_dim=2, with_bias=True\) expects inputs of "
         r"shape \(\.\.\., 5\), got \(2, 4\)",
         r"Fix: check the previous layer's output size",
         lambda _: pax.Sequential(pax.Linear(3, 4), jax.nn.relu,
                                  pax.Linear(5, 2))(_x(2, 3))),
    Case("linear_bad_in_dim", "pax.Linear", "`in_dim=0`", ValueError,
         r"in_dim must be a positive int, got 0",
         r"Fix: e\.g\. pax\.Linear\(in_dim=784, out_dim=10\)",
         lambda _: pax.Linear(0, 2)),
    Case("linear_str_in_dim", "pax.Linear", "`in_dim='3'`", ValueError,
         r"in_dim must be a positive int, got '3'",
         r"Fix: e\.g\. pax\.Linear\(in_dim=784",
         lambda _: pax.Linear("3", 2)),
    Case("conv2d_missing_axis", "pax.Conv2D", "3-d inputs", ValueError,
         r"Conv2D\(in_features=1, .*\) expects inputs of shape \(N, H, W, 1\)"
         r".*got \(2, 8, 8\)", r"Fix: pass 4-d inputs in NHWC layout",
         lambda _: pax.Conv2D(1, 4, 3)(_x(2, 8, 8))),
    Case("conv2d_wrong_channels", "pax.Conv2D", "3 channels into a 1-channel "
         "conv", ValueError, r"expects inputs of shape \(N, H, W, 1\).*got "
         r"\(2, 8, 8, 3\)", r"Fix: pass 4-d inputs .* with 1 channels",
         lambda _: pax.Conv2D(1, 4, 3)(_x(2, 8, 8, 3))),
    Case("conv2d_integer_input", "pax.Conv2D", "uint8 pixels", TypeError,
         r"Conv2D\(.*\) expects floating-point inputs, got dtype uint8",
         r"Fix: cast first, e\.g\. `x\.astype\(jnp\.float32\) / 255\.0`",
         lambda _: pax.Conv2D(3, 4, 3)(jnp.ones((1, 8, 8, 3), jnp.uint8))),
    Case("batchnorm1d_2d_input", "pax.BatchNorm1D", "(N, C) features",
         ValueError, r"BatchNorm1D\(num_channels=3.*\) expects inputs of "
         r"shape \(N, W, 3\), got \(4, 5\)",
         r"Fix: pass 3-d inputs .*x\[:, None, :\].*pax\.LayerNorm",
         lambda _: pax.purecall(pax.BatchNorm1D(3), _x(4, 5))),
    Case("layernorm_wrong_channels", "pax.LayerNorm", "5 channels into "
         "LayerNorm(3)", ValueError, r"LayerNorm\(num_channels=3.*\) expects "
         r"inputs of shape \(\.\.\., 3\), got \(4, 5\)",
         r"Fix: normalize inputs whose last axis has num_channels entries",
         lambda _: pax.LayerNorm(3, -1)(_x(4, 5))),
    Case("embed_float_ids", "pax.Embed", "float token ids", TypeError,
         r"Embed\(vocab_size=10, embed_dim=3\) expects integer ids, got "
         r"dtype float32", r"Fix: pass token ids, e\.g\. "
         r"`ids\.astype\(jnp\.int32\)`",
         lambda _: pax.Embed(10, 3)(_x(4))),
    Case("lstm_wrong_input_size", "pax.LSTM", "5 features into LSTM(3, 4)",
         ValueError, r"LSTM\(input_dim=3, hidden_dim=4\) expects inputs of "
         r"shape \(batch, 3\), got \(2, 5\)",
         r"Fix: call `core\(state, x\)` with x of size input_dim",
         lambda _: pax.LSTM(3, 4)(pax.LSTM(3, 4).initial_state(2), _x(2, 5))),
    Case("attention_wrong_features", "pax.MultiHeadAttention", "5 features "
         "into attention expecting 16", ValueError,
         r"MultiHeadAttention\(num_heads=8, key_size=2\) expects inputs of "
         r"shape \(\.\.\., T, 16\) for `query`, got \(2, 3, 5\)",
         r"Fix: queries, keys and values need input_dim features",
         lambda _: pax.MultiHeadAttention(8, 2)(_x(2, 3, 5), _x(2, 3, 5),
                                                _x(2, 3, 5))),
    Case("dropout_rate_out_of_range", "pax.Dropout", "`dropout_rate=1.5`",
         ValueError, r"dropout_rate must be a float in \[0, 1\), got 1\.5",
         r"Fix: e\.g\. pax\.Dropout\(0\.1\)", lambda _: pax.Dropout(1.5)),
    # -- loss functions -------------------------------------------------------
    Case("grad_non_scalar_loss", "pax.grad", "a (4, 2) loss", TypeError,
         r"loss returned by `_vector_loss` must be a scalar \(shape \(\)\), "
         r"got shape \(4, 2\)", r"Fix: reduce it, e\.g\. `loss = jnp\.mean",
         lambda _: pax.grad(_vector_loss)(_net(), _x(4, 3))),
    Case("grad_integer_loss", "pax.grad", "an int32 loss", TypeError,
         r"must have a floating point dtype, got int32",
         r"Fix: compute it in float",
         lambda _: pax.grad(_int_loss)(_net(), _x(4, 3))),
    Case("grad_python_int_loss", "pax.grad", "a Python int loss", TypeError,
         r"must be a scalar float array, got a int",
         r"Fix: return e\.g\. `jnp\.mean",
         lambda _: pax.grad(_python_int_loss)(_net(), _x(4, 3))),
    Case("grad_tuple_without_has_aux", "pax.grad", "returning `(loss, aux)` "
         "without `has_aux=True`", TypeError,
         r"returned a tuple of length 2, but without `has_aux=True`",
         r"Fix: pass `has_aux=True`",
         lambda _: pax.grad(_loss_and_aux)(_net(), _x(4, 3))),
    Case("grad_has_aux_scalar", "pax.grad", "`has_aux=True` but returning "
         "only the loss", TypeError, r"with `has_aux=True`, `_loss_only` must "
         r"return a pair `\(loss, aux\)`, got an array of shape \(\)",
         r"Fix: `return loss, aux`",
         lambda _: pax.grad(_loss_only, has_aux=True)(_net(), _x(4, 3))),
    Case("update_fn_loss_only", "pax.build_update_fn", "loss_fn returning "
         "only the loss", ValueError, r"`_loss_only` must return `\(loss, "
         r"\(aux, model\)\)`, but it returned an array of shape \(\)",
         _LOSS_FN_FIX, lambda _: pax.build_update_fn(_loss_only)(
             _net(), _optimizer(_net()), _x(2, 3))),
    Case("update_fn_loss_and_aux", "pax.build_update_fn", "loss_fn "
         "returning `(loss, aux)`", ValueError,
         r"its second element is a float, not a pair `\(aux, model\)`",
         _LOSS_FN_FIX, lambda _: pax.build_update_fn(_loss_and_aux)(
             _net(), _optimizer(_net()), _x(2, 3))),
    Case("update_fn_model_aux_swapped", "pax.build_update_fn", "loss_fn "
         "returning `(loss, (model, aux))`", ValueError,
         r"the model in `\(aux, model\)` is a float.*Likely cause: "
         r"`\(model, aux\)` in the wrong order", _LOSS_FN_FIX,
         lambda _: pax.build_update_fn(_model_aux_swapped)(
             _net(), _optimizer(_net()), _x(2, 3))),
    Case("update_fn_non_scalar_loss", "pax.build_update_fn", "a per-example "
         "loss", TypeError, r"must be a scalar \(shape \(\)\), got shape "
         r"\(2,\)", r"Fix: reduce it",
         lambda _: pax.build_update_fn(_per_example_loss)(
             _net(), _optimizer(_net()), _x(2, 3))),
    Case("update_fn_returns_other_model", "pax.build_update_fn", "loss_fn "
         "returning a different module", ValueError,
         r"the returned model does not have the structure of the input "
         r"model: the first tree has an extra leaf at `\.bias`",
         _LOSS_FN_FIX, lambda _: pax.build_update_fn(_returns_other_model)(
             _net(), _optimizer(_net()), _x(2, 3))),
    Case("build_update_fn_not_callable", "pax.build_update_fn", "an int",
         TypeError, r"expects a loss function, got int",
         r"Fix:.*update_fn = pax\.build_update_fn\(loss_fn\)",
         lambda _: pax.build_update_fn(3)),
    Case("update_fn_optax_optimizer", "pax.build_update_fn", "a raw optax "
         "transformation as the optimizer", TypeError,
         r"the optimizer must be a pax Optimizer, got "
         r"GradientTransformationExtraArgs",
         r"Fix: `optimizer = pax\.from_optax\(optax\.adam\(1e-3\)\)"
         r"\(model\.parameters\(\)\)`",
         lambda _: pax.build_update_fn(_mse)(_net(), optax.adam(1e-3),
                                              _x(2, 3))),
    Case("update_fn_model_is_dict", "pax.build_update_fn", "a params dict "
         "as the model", TypeError, r"the model argument must be a "
         r"pax\.Module .*got dict", r"Fix: put the model first, e\.g\. "
         r"`update_fn\(model, optimizer, x, y\)`",
         lambda _: pax.build_update_fn(_mse)({"a": 1}, _optimizer(_net()),
                                              _x(2, 3))),
    Case("update_fn_scan_mode_unpaired", "pax.build_update_fn",
         "`scan_mode=True` called with `(model, optimizer, x)`", TypeError,
         r"the first argument must be the pair `\(model, optimizer\)`, got a "
         r"module \(Linear\)", r"Fix: `\(model, optimizer\), aux = "
         r"update_fn\(\(model, optimizer\), x\)`",
         lambda _: pax.build_update_fn(_mse, scan_mode=True)(_net(),
                                                             _x(2, 3))),
    Case("from_optax_not_transformation", "pax.from_optax", "an int",
         TypeError, r"expects an optax GradientTransformation .*got int",
         r"Fix: e\.g\. `pax\.from_optax\(optax\.adam\(1e-3\)\)",
         lambda _: pax.from_optax(3)),
    Case("from_optax_params_not_arrays", "pax.from_optax(tx)(params)",
         "an int as the parameters", TypeError,
         r"`params` must be the model's parameters .*got int",
         r"Fix: `pax\.from_optax\(optax\.adam\(1e-3\)\)\(model\.parameters"
         r"\(\)\)`", lambda _: pax.from_optax(optax.adam(1e-3))(3)),
    Case("grad_integer_parameter", "pax.grad", "an int32 trainable weight",
         TypeError, r"the trainable parameter `\.weight` has dtype int32",
         r"Fix: create it as float",
         lambda _: pax.grad(lambda m, x: jnp.sum(m(x)).astype(jnp.float32))(
             _net().replace(weight=jnp.ones((3, 2), jnp.int32)),
             jnp.ones((1, 3)))),
    Case("load_not_a_checkpoint", "pax.load", "a text file", ValueError,
         r"Cannot read checkpoint .*not a NumPy \.npz archive",
         r"Fix: pass a file written by `pax\.save`",
         lambda tmp: pax.load(_text_file(tmp), _net())),
    Case("hyperparams_without_inject", "Optimizer.set_hyperparam",
         "setting a hyperparameter of a plain optax optimizer", ValueError,
         r"the optax state has no `optax\.inject_hyperparams` state",
         r"Fix: build the optimizer with `optax\.inject_hyperparams`",
         lambda _: _optimizer(_net()).set_hyperparam("learning_rate", 1.0)),
    # -- scan -----------------------------------------------------------------
    Case("scan_mismatched_leading_axes", "pax.scan", "xs leaves of lengths "
         "3 and 4", ValueError, r"the leaves of `xs` have different lengths "
         r"along the scanned axis.*xs\['a'\]: shape \(3, 2\), length 3.*"
         r"xs\['b'\]: shape \(4, 2\), length 4", _SCAN_FIX,
         lambda _: pax.scan(lambda c, x: (c, x), 0.0,
                            {"a": _x(3, 2), "b": _x(4, 2)})),
    Case("scan_length_mismatch", "pax.scan", "`length=4` with 3-step xs",
         ValueError, r"`length=4` does not match the length of `xs` \(3\)",
         _SCAN_FIX, lambda _: pax.scan(lambda c, x: (c, x), 0.0, _x(3, 2),
                                       length=4)),
    Case("scan_batch_major_without_time_axis", "pax.scan",
         "`time_major=False` with 1-d xs", ValueError,
         r"some leaves of `xs` have no axis 1 to scan over", _SCAN_FIX,
         lambda _: pax.scan(lambda c, x: (c, x), 0.0, _x(3),
                            time_major=False)),
    Case("scan_no_xs_no_length", "pax.scan", "`xs=None` without `length`",
         ValueError, r"`xs` is None \(or has no arrays\), so the number of "
         r"steps is unknown", r"Fix: pass `length`",
         lambda _: pax.scan(lambda c, x: (c, x), 0.0, None)),
    Case("scan_negative_length", "pax.scan", "`length=-1`", TypeError,
         r"`length` must be a non-negative int, got -1",
         r"Fix: pass the number of steps",
         lambda _: pax.scan(lambda c, x: (c, x), 0.0, None, length=-1)),
    Case("scan_carry_changes_shape", "pax.scan", "a body whose carry grows "
         "each step", TypeError,
         r"the carry leaf `\[0\]` enters `.*lambda>` with shape \(2,\) "
         r"float32 and leaves it with shape \(3,\) float32",
         r"Fix: return a carry built like `init`",
         lambda _: pax.scan(lambda c, x: ((jnp.append(c[0], x),), x),
                            (jnp.zeros(2),), jnp.ones(3))),
    Case("scan_carry_other_structure", "pax.scan", "a body that returns a "
         "module without its bias", TypeError,
         r"returned a carry whose structure differs from the carry it "
         r"received: the first tree has an extra leaf at `\.bias`",
         r"Fix: return a carry built like `init`",
         lambda _: pax.scan(
             lambda m, x: (pax.Linear(3, 2, with_bias=False), x), _net(),
             jnp.ones(3))),
    # -- checkpoints ------------------------------------------------------------
    Case("resume_checkpoint_other_width", "trainer", "resuming a workdir "
         "whose checkpoint has hidden size 32 with hidden size 16",
         ValueError, r"does not match the expected structure at leaf \d+ .*"
         r"the checkpoint has shape \(32,\).*expected shape \(16,\)",
         _CKPT_FIX, _resume_other_model),
    Case("resume_checkpoint_other_depth", "trainer", "resuming with one more "
         "hidden layer", ValueError, r"leaves but \d+ are expected|does not "
         r"match the expected structure", _CKPT_FIX, _resume_other_depth),
    Case("checkpoint_all_damaged", "checkpoint.restore_latest", "the only "
         "checkpoint is truncated", checkpoint.CheckpointError,
         r"All 1 checkpoints in .* are damaged:.*corrupted or truncated",
         r"Move them away \(or use a new workdir\)",
         _all_checkpoints_damaged),
    Case("checkpoint_restore_damaged", "checkpoint.restore", "restoring "
         "one truncated checkpoint by step", checkpoint.CheckpointError,
         r"fails its checksum|cannot be read|truncated|corrupted",
         r"Fix: restore an intact checkpoint instead \(`restore_latest` "
         r"skips damaged ones\)", _restore_damaged_step),
    Case("checkpoint_missing_leaf", "checkpoint.restore_latest", "restoring "
         "into a tree with one more leaf", ValueError,
         r"has 2 leaves but 3 are expected; the first missing one is leaf 2",
         _CKPT_FIX, _restore_with_more_leaves),
    Case("checkpoint_other_dtype", "checkpoint.restore_latest", "restoring "
         "float32 weights as float16", ValueError,
         r"checkpoint has shape \(2, 3\) dtype float32 .*expected shape "
         r"\(2, 3\) dtype float16", _CKPT_FIX, _restore_with_other_dtype),
    Case("checkpoint_metadata_not_json", "checkpoint.save", "a NumPy scalar "
         "in the metadata", TypeError, r"metadata must be JSON-serialisable",
         r"Convert arrays and NumPy scalars to Python values first",
         lambda tmp: checkpoint.save(tmp, 1, _TREE, {"x": np.float32(1)})),
    Case("checkpoint_typed_key_leaf", "checkpoint.save", "a typed PRNG key "
         "leaf", TypeError, r"is a typed PRNG key array",
         r"store its raw data instead: jax\.random\.key_data\(key\)",
         lambda tmp: checkpoint.save(tmp, 1, {"k": jax.random.key(0)})),
    # -- training config and workdir ------------------------------------------
    Case("config_unknown_key", "train_and_evaluate", "`config.learnig_rate`",
         ValueError, r"unknown config key `learnig_rate`",
         r"valid keys: .*learning_rate",
         lambda tmp: train_lib.train_and_evaluate(_smoke(learnig_rate=0.1),
                                                  tmp)),
    Case("config_unknown_model_key", "config_schema.validate",
         "`config.model_config.hiden`", ValueError,
         r"unknown config key `model_config\.hiden`",
         r"valid keys: dropout, hidden_sizes",
         lambda _: config_schema.validate(_smoke(**{"model_config.hiden": 3}))),
    Case("config_learning_rate_negative", "config_schema.validate",
         "`learning_rate=-1.0`", ValueError, r"got -1\.0",
         r"`learning_rate` must be a float in \(0, 10\]",
         lambda _: config_schema.validate(_smoke(learning_rate=-1.0))),
    Case("config_model_dataset_mismatch", "config_schema.validate",
         "`model='lstm'` on `dataset='digits'`", ValueError,
         r"unknown config key `model_config\.hidden_sizes`|model 'lstm' "
         r"trains on dataset 'chars', not 'digits'", r"valid keys|'chars'",
         lambda _: config_schema.validate(_smoke(model="lstm"))),
    Case("config_steps_not_multiple", "config_schema.validate",
         "`steps_per_call=7` with `num_steps=100`", ValueError,
         r"`num_steps` \(100\) must be a multiple of `steps_per_call` \(7\)",
         r"the loop runs 7 steps per call",
         lambda _: config_schema.validate(_smoke(steps_per_call=7))),
    Case("config_dropout_out_of_range", "config_schema.validate",
         "`model_config.dropout=1.5`", ValueError, r"got 1\.5",
         r"`model_config\.dropout` must be in \[0, 1\)",
         lambda _: config_schema.validate(
             _smoke(**{"model_config.dropout": 1.5}))),
    Case("workdir_is_a_file", "train_and_evaluate", "a workdir below a "
         "regular file", ValueError, r"Cannot write to workdir .*: Not a "
         r"directory", r"Fix: pass a writable directory with --workdir",
         lambda tmp: train_lib.train_and_evaluate(
             smoke.get_config(), _regular_file(tmp) + "/sub")),
    Case("nan_loss", "train_and_evaluate", "a loss that becomes NaN",
         train_lib.NonFiniteLossError, r"Training loss became nan in steps "
         r"1\.\.10", r"Fix: lower `learning_rate` \(now 0\.01\): rerun with "
         r"--config\.learning_rate=0\.001",
         _train_with_nonfinite_loss(jnp.nan)),
    Case("inf_loss", "train_and_evaluate", "a loss that becomes Inf",
         train_lib.NonFiniteLossError, r"Training loss became inf in steps "
         r"1\.\.10", r"Fix: lower `learning_rate`",
         _train_with_nonfinite_loss(jnp.inf)),
    Case("workdir_in_use", "train_and_evaluate", "a second run on a workdir "
         "another live run holds", workdir_lock.WorkdirLockedError,
         r"is in use by another run: held by pid \d+ on host",
         r"Fix: wait for that run to finish \(or stop it\), or pass another "
         r"--workdir", _train_while_locked),
    Case("resume_changes_optimizer", "train_and_evaluate", "resuming a "
         "workdir with another optimizer", resume_config.ConfigChangeError,
         r"these keys change the optimization:\n  optimizer: 'adamw' -> "
         r"'sgd'", r"Fix: rerun with the saved values .* or pass "
         r"--allow_config_change", _resume_with_sgd),
    Case("checkpoint_disk_full", "train_and_evaluate", "a disk too small "
         "for the checkpoints", storage_checks.StorageError,
         r"Not enough space for checkpoints in .*: 5 checkpoints of this "
         r"model need about", r"Fix: free space there, lower "
         r"`keep_checkpoints`, or pass a --workdir", _train_on_a_full_disk),
    Case("checkpoint_dir_read_only", "train_and_evaluate", "a checkpoint "
         "directory it may not write", storage_checks.StorageError,
         r"Cannot write a checkpoint in .*checkpoints: Permission denied",
         r"Fix: make it writable", _train_with_read_only_checkpoints),
)


def _regular_file(tmp):
  path = os.path.join(tmp, "a_file")
  with open(path, "w") as f:
    f.write("x")
  return path


BINARY_CASES = (
    BinaryCase("flag_unknown", "tools/train.py", "`--bogus_flag=1`",
               ["--bogus_flag=1", "--workdir={workdir}"],
               r"Unknown command line flag 'bogus_flag'",
               r"Fix: see `--help` for the flags"),
    BinaryCase("flag_missing_workdir", "tools/train.py", "no `--workdir`",
               [], r"--workdir is required",
               r"Fix: add e\.g\. `--workdir=.*smoke`"),
    BinaryCase("flag_not_a_float", "tools/train.py",
               "`--config.learning_rate=abc`",
               ["--config.learning_rate=abc", "--workdir={workdir}"],
               r"flag --config\.learning_rate=abc: could not convert string "
               r"to float: 'abc'", r"Fix: see `--help` for the flags"),
    BinaryCase("flag_unknown_config_key", "tools/train.py",
               "`--config.typo=3`", ["--config.typo=3", "--workdir={workdir}"],
               r"unknown config key `typo` \(in --config\.typo=3\)",
               r"Fix: use a key the config has"),
    BinaryCase("flag_missing_config_file", "tools/train.py",
               "`--config=missing.py`",
               ["--config=missing.py", "--workdir={workdir}"],
               r"--config: cannot load the config file .*No such file",
               r"Fix: pass an existing config file"),
    BinaryCase("flag_batch_size_zero", "tools/train.py",
               "`--config.batch_size=0`",
               ["--config.batch_size=0", "--workdir={workdir}"],
               r"Invalid training config:.*got 0",
               r"`batch_size` must be an integer >= 1"),
    BinaryCase("flag_unknown_model", "tools/train.py",
               "`--config.model=resnet`",
               ["--config.model=resnet", "--workdir={workdir}"],
               r"got 'resnet'",
               r"`model` must be one of \['cnn', 'lstm', 'mlp', "
               r"'transformer'\]"),
    BinaryCase("flag_model_module_not_found", "tools/train.py",
               "`--config.model=no_such_pkg.models:build`",
               ["--config.model=no_such_pkg.models:build",
                "--workdir={workdir}"],
               r"cannot import module 'no_such_pkg\.models'",
               r"Fix: run from the directory that holds `no_such_pkg`"),
    BinaryCase("flag_model_factory_misspelt", "tools/train.py",
               "`--config.model=tools.trainer.models:mpl`",
               ["--config.model=tools.trainer.models:mpl",
                "--workdir={workdir}"],
               r"module 'tools\.trainer\.models' has no attribute 'mpl'",
               r"Fix: `--config\.model=tools\.trainer\.models:mlp`"),
    BinaryCase("flag_model_factory_wrong_type", "tools/train.py",
               "a model factory that returns data",
               ["--config.model=tools.trainer.datasets:digits",
                "--workdir={workdir}"],
               r"the factory returned tuple, not a pax\.Module instance",
               r"config\.model='tools\.trainer\.datasets:digits'"),
    BinaryCase("flag_dataset_factory_wrong_type", "tools/train.py",
               "a dataset factory that returns a model",
               ["--config.dataset=tools.trainer.models:mlp",
                "--workdir={workdir}"],
               r"the factory returned Sequential, not a pair \(train, test\)",
               r"Fix: end the factory with `return train, test`"),
    BinaryCase("flag_examples_wrong_shape", "tools/train.py",
               "a model for other examples (the digits MLP on text)",
               ["--config.model=tools.trainer.models:mlp",
                "--config.dataset=chars", "--config.task=language_model",
                "--config.max_bytes=5000", "--workdir={workdir}"],
               r"fails on a batch of 2 training examples of "
               r"config\.dataset='chars'",
               r"inputs \(2, 128\) int32"),
    BinaryCase("flag_task_mismatch", "tools/train.py",
               "`--config.task=language_model` on the digits",
               ["--config.task=language_model", "--workdir={workdir}"],
               r"dataset 'digits' is a classification dataset",
               r"set --config\.task=classification"),
    BinaryCase("flag_unknown_optimizer", "tools/train.py",
               "`--config.optimizer=rmsprop`",
               ["--config.optimizer=rmsprop", "--workdir={workdir}"],
               r"got 'rmsprop'",
               r"`optimizer` must be one of \['adam', 'adamw', 'sgd'\]"),
    BinaryCase("flag_steps_not_multiple", "tools/train.py",
               "`--config.steps_per_call=7`",
               ["--config.steps_per_call=7", "--workdir={workdir}"],
               r"`num_steps` \(100\) must be a multiple of `steps_per_call` "
               r"\(7\)", r"the loop runs 7 steps per call"),
    BinaryCase("flag_unwritable_workdir", "tools/train.py",
               "`--workdir` below a regular file",
               ["--workdir={file}/sub"],
               r"Cannot write to workdir .*Not a directory",
               r"Fix: pass a writable directory with --workdir"),
    BinaryCase("flag_extra_argument", "tools/train.py",
               "a stray positional argument",
               ["stray", "--workdir={workdir}"],
               r"unexpected arguments: stray",
               r"Fix: pass options as --flag=value; see `--help`"),
)


class RecoveryCase(NamedTuple):
  """A damaged newest checkpoint: detected, skipped, the previous one used."""
  id: str
  bad_input: str
  damage: Callable[[str], None]


def _arrays_of(path):
  return checkpoint.array_files(path)[0]


def _metadata_of(path):
  return os.path.join(path, checkpoint.MANIFEST_FILE)


RECOVERY_CASES = (
    RecoveryCase("ckpt_arrays_truncated",
                 "largest array file cut to half its size",
                 lambda p: _truncate(_arrays_of(p))),
    RecoveryCase("ckpt_arrays_empty", "largest array file of 0 bytes",
                 lambda p: _truncate(_arrays_of(p), 0.0)),
    RecoveryCase("ckpt_arrays_bit_flip",
                 "one flipped byte in the largest array file",
                 lambda p: _flip_byte(_arrays_of(p))),
    RecoveryCase("ckpt_arrays_missing", "largest array file deleted",
                 lambda p: os.remove(_arrays_of(p))),
    RecoveryCase("ckpt_metadata_truncated", "pax_manifest.json cut in half",
                 lambda p: _truncate(_metadata_of(p))),
    RecoveryCase("ckpt_metadata_edited", "pax_manifest.json edited (checksum "
                 "no longer matches)", lambda p: _edit_metadata(p)),
    RecoveryCase("ckpt_metadata_missing", "pax_manifest.json deleted",
                 lambda p: os.remove(_metadata_of(p))),
)


def _edit_metadata(path):
  with open(_metadata_of(path)) as f:
    text = f.read()
  with open(_metadata_of(path), "w") as f:
    f.write(text.replace('"step": 20', '"step": 21'))


def all_case_ids():
  return ([c.id for c in API_CASES] + [c.id for c in BINARY_CASES] +
          [c.id for c in RECOVERY_CASES])


# ----------------------------------------------------------------------------
# Tests.
# ----------------------------------------------------------------------------


def _check_message(test, message, case):
  test.assertTrue(message.strip(), f"{case.id}: empty error message")
  test.assertRegex(message, re.compile(case.problem, re.S),
                   f"{case.id}: the message does not state the problem")
  test.assertRegex(message, re.compile(case.fix, re.S),
                   f"{case.id}: the message does not state the fix")


class ApiCasesTest(parameterized.TestCase):

  @parameterized.named_parameters((c.id, c) for c in API_CASES)
  def test_case(self, case):
    tmp = self.create_tempdir().full_path
    with self.assertRaises(BaseException) as cm:
      case.fn(tmp)
    error = cm.exception
    # PaxArgumentError is a ValueError with a message that is also an
    # AssertionError, for PAX code that expects PAX's asserts.
    if not isinstance(error, _checks.PaxArgumentError):
      self.assertNotIsInstance(error, AssertionError,
                               f"{case.id}: a bare assert reached the user")
    self.assertIsInstance(error, case.error,
                          f"{case.id}: {type(error).__name__}: {error}")
    _check_message(self, str(error), case)


class BinaryCasesTest(parameterized.TestCase):
  """Bad command lines; the subprocesses run concurrently in setUpClass."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.tmp = tempfile.mkdtemp(dir=absltest.get_default_test_tmpdir())
    a_file = os.path.join(cls.tmp, "a_file")
    with open(a_file, "w") as f:
      f.write("x")
    env = dict(os.environ, PYTHONPATH=ROOT)
    procs = {}
    for case in BINARY_CASES:
      workdir = os.path.join(cls.tmp, case.id)
      argv = [a.format(workdir=workdir, file=a_file) for a in case.argv]
      # Forked from a server that imported the trainer once.
      procs[case.id] = launch.Popen(
          [sys.executable, TRAIN, f"--config={SMOKE}", *argv],
          stdout=launch.PIPE, stderr=launch.PIPE, text=True, env=env,
          cwd=ROOT)
    cls.results = {}
    for case_id, proc in procs.items():
      out, err = proc.communicate(timeout=300)
      cls.results[case_id] = (proc.returncode, out, err)

  @parameterized.named_parameters((c.id, c) for c in BINARY_CASES)
  def test_case(self, case):
    returncode, out, err = self.results[case.id]
    self.assertNotEqual(returncode, 0, f"{case.id}: exited 0\n{out}")
    # absl logs "I... " lines to stderr; the user-facing error is the rest.
    message = "\n".join(l for l in (out + err).splitlines()
                        if not re.match(r"^[IWE]\d{4} ", l))
    self.assertNotIn("Traceback (most recent call last)", message,
                     f"{case.id}: a traceback reached the user")
    _check_message(self, message, case)
    self.assertFalse(os.path.exists(os.path.join(self.tmp, case.id,
                                                 "checkpoints")))


class RecoveryCasesTest(parameterized.TestCase):

  @parameterized.named_parameters((c.id, c) for c in RECOVERY_CASES)
  def test_damaged_newest_checkpoint_is_skipped(self, case):
    directory = self.create_tempdir().full_path
    good = {"w": np.full((2, 3), 1.0, np.float32), "n": np.int32(10)}
    newer = {"w": np.full((2, 3), 2.0, np.float32), "n": np.int32(20)}
    checkpoint.save(directory, 10, good, {"data": "ten"})
    path = checkpoint.save(directory, 20, newer, {"data": "twenty"})
    case.damage(path)
    with self.assertRaises(checkpoint.CheckpointError):
      checkpoint.verify(directory, 20)
    with self.assertLogs(level=logging.WARNING) as logs:
      restored = checkpoint.restore_latest(directory, like=good)
    self.assertIn("Skipping damaged checkpoint", "\n".join(logs.output))
    self.assertEqual(restored.step, 10)
    self.assertEqual(restored.metadata, {"data": "ten"})
    np.testing.assert_array_equal(restored.tree["w"], good["w"])
    self.assertEqual(int(restored.tree["n"]), 10)
    self.assertTrue(os.path.isdir(path), "the damaged checkpoint was deleted")
    self.assertEqual(checkpoint.latest_step(directory, verify_integrity=True),
                     10)


class DocTest(absltest.TestCase):

  def test_catalogue_size_and_unique_ids(self):
    ids = all_case_ids()
    self.assertLen(set(ids), len(ids), "duplicate case ids")
    self.assertGreaterEqual(len(API_CASES) + len(BINARY_CASES), 40)
    for case_id in ids:
      self.assertRegex(case_id, r"^[a-z0-9_]+$")

  def test_doc_lists_every_case(self):
    with open(DOC, encoding="utf-8") as f:
      text = f.read()
    documented = re.findall(r"^\| `([a-z0-9_]+)` \|", text, re.M)
    self.assertCountEqual(
        documented, all_case_ids(),
        "docs/bad_inputs.md is out of date; regenerate it with "
        "`python3 tests/reliability_bad_inputs_doc.py > docs/bad_inputs.md`")


if __name__ == "__main__":
  quick_exit.main()
