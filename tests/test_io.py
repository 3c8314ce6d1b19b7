"""jaxrnn.io: params files restore the same tree, dtypes and bits, are
written atomically, and every error names what went wrong."""

import enum
import os
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import serialization

import jaxrnn
import jaxrnn.io


class Custom(NamedTuple):
  scale: jax.Array
  shift: object = None


def shaped_params(layer, input_size, dtype=np.float32, seed=0):
  """Random params of ``layer`` with -0.0 and a NaN payload in every leaf."""
  shapes = jax.eval_shape(lambda k: layer.init(k, input_size), jax.random.key(0))
  rng = np.random.RandomState(seed)

  def leaf(s):
    x = rng.randn(*s.shape).astype(np.float32)
    bits = x.reshape(-1).view(np.uint32)
    bits[0] = 0x80000000   # -0.0
    bits[-1] = 0x7FC00123  # a NaN with a payload
    return x.astype(dtype)

  return jax.tree.map(leaf, shapes)


def same(a, b):
  """Same tree (node types included), dtypes, shapes and bytes."""
  if type(a) is not type(b) and not (isinstance(a, np.ndarray) and isinstance(b, np.ndarray)):
    return False
  if isinstance(a, np.ndarray):
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()
  if isinstance(a, (tuple, list)):
    return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
  if isinstance(a, dict):
    return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
  return a == b


def test_round_trip_is_exact_for_stacks_variants_and_dtypes(tmp_path):
  net = jaxrnn.stack(
      jaxrnn.bidirectional(jaxrnn.lstm(4, peephole=True, proj_size=2),
                           jaxrnn.gru(3, reset_after=False)),
      jaxrnn.simple_rnn(2))
  tree = {
      "net": shaped_params(net, 3),
      "bf16": shaped_params(jaxrnn.lstm(2), 2, dtype=jnp.bfloat16),
      "f64": np.linspace(-1, 1, 7, dtype=np.float64),
      "int": np.arange(6, dtype=np.int8).reshape(2, 3),
      "scalar": np.array(np.float32(2.5)),
      "empty": np.zeros((0, 3), np.float16),
      7: [None, (), {"step": 12, "lr": 1e-3, "done": True}],
      "custom": Custom(np.ones(2, np.float32)),
  }
  tree["jax"] = jnp.arange(3.0)
  path = tmp_path / "params.msgpack"
  jaxrnn.io.save(path, tree)
  back = jaxrnn.io.load(path, namedtuples=[Custom])
  expected = dict(tree, jax=np.asarray(tree["jax"]))
  assert same(back, expected)
  lstm_params = back["net"][0][0]
  assert type(lstm_params) is jaxrnn.LSTMParams and lstm_params.w_gates is None
  assert back["net"][0][1].b_hn is None and type(back["net"]) is tuple
  assert jax.tree.structure(back["net"]) == jax.tree.structure(tree["net"])
  assert back["bf16"].w_x.dtype == jnp.bfloat16


def test_save_replaces_atomically_and_leaves_no_temporary_file(tmp_path, monkeypatch):
  path = tmp_path / "p.msgpack"
  jaxrnn.io.save(path, {"a": np.zeros(2)})
  jaxrnn.io.save(str(path), {"a": np.ones(2)})  # replaces, str paths work
  assert same(jaxrnn.io.load(path), {"a": np.ones(2)})
  assert os.listdir(tmp_path) == ["p.msgpack"]
  umask = os.umask(0)
  os.umask(umask)
  assert os.stat(path).st_mode & 0o777 == 0o666 & ~umask
  # A crash before the rename leaves the old file whole and no temp file.
  calls = []

  def failing_fsync(fd):
    calls.append(fd)
    raise OSError("disk full")

  monkeypatch.setattr(os, "fsync", failing_fsync)
  with pytest.raises(OSError, match="disk full"):
    jaxrnn.io.save(path, {"a": np.full(2, 5.0)})
  monkeypatch.undo()
  assert calls and os.listdir(tmp_path) == ["p.msgpack"]
  assert same(jaxrnn.io.load(path), {"a": np.ones(2)})
  # An unsavable tree fails before the file is touched.
  with pytest.raises(TypeError):
    jaxrnn.io.save(path, {"a": object()})
  assert same(jaxrnn.io.load(path), {"a": np.ones(2)})


@pytest.mark.parametrize("tree, error, match", [
    ({"w": [np.ones(2), b"bytes"]}, TypeError, r"tree\['w'\]\[1\] is a bytes; expected arrays"),
    ({"w": np.array(["a"])}, TypeError, r"tree\['w'\] has dtype <U1; expected a numeric array"),
    ({(1, 2): np.ones(1)}, TypeError, r"tree has key \(1, 2\) of type tuple; dict keys must be str or int"),
    ({"key": jax.random.key(0)}, TypeError, r"tree\['key'\] is a typed PRNG key array; save jax.random.key_data"),
    (jaxrnn.RNNParams(np.ones(1), None, object()), TypeError, r"tree.b is a object"),
])
def test_save_errors_name_the_path_in_the_tree(tmp_path, tree, error, match):
  with pytest.raises(error, match=match):
    jaxrnn.io.save(tmp_path / "x", tree)
  assert not os.listdir(tmp_path)


def test_load_errors(tmp_path):
  path = tmp_path / "c.msgpack"
  jaxrnn.io.save(path, [Custom(np.ones(1))])
  with pytest.raises(ValueError, match=r"NamedTuples this load does not know: test_io.Custom "
                     r"\(at tree\[0\]\). Fix: pass the classes, "
                     r"load\(path, namedtuples=\[Custom\]\)"):
    jaxrnn.io.load(path)
  class Other(NamedTuple):
    inner: Any
  jaxrnn.io.save(tmp_path / "two", {"a": [Other(Custom(1.0))], "b": Other(2.0)})
  with pytest.raises(ValueError, match=r"does not know: test_io.test_load_errors.<locals>.Other "
                     r"\(at tree\['a'\]\[0\]\), test_io.Custom \(at tree\['a'\]\[0\].inner\)"
                     r".*namedtuples=\[Other, Custom\]\)"):    # every class, each once
    jaxrnn.io.load(tmp_path / "two")

  class Custom2(NamedTuple):  # noqa: F811 - same qualified name, other fields
    scale: jax.Array
  Custom2.__qualname__ = "Custom"
  with pytest.raises(ValueError, match=r"saved with fields \('scale', 'shift'\); the class now has \('scale',\)"):
    jaxrnn.io.load(path, namedtuples=[Custom2])
  class Custom3(NamedTuple):  # gained a field with a default: older files still load
    scale: jax.Array
    shift: jax.Array
    extra: Any = None
  Custom3.__qualname__ = "Custom"
  assert jaxrnn.io.load(path, namedtuples=[Custom3])[0].extra is None
  with pytest.raises(TypeError, match=r"namedtuples must hold NamedTuple classes; got <class 'dict'>"):
    jaxrnn.io.load(path, namedtuples=[dict])

  (tmp_path / "junk").write_bytes(b"\xc1 not msgpack")
  with pytest.raises(ValueError, match=r"is not a msgpack file"):
    jaxrnn.io.load(tmp_path / "junk")
  (tmp_path / "other").write_bytes(serialization.msgpack_serialize({"params": np.ones(2)}))
  with pytest.raises(ValueError, match=r"is msgpack but not a jaxrnn params file"):
    jaxrnn.io.load(tmp_path / "other")
  (tmp_path / "future").write_bytes(serialization.msgpack_serialize(
      {"format": "jaxrnn.params", "version": 99, "tree": {"t": "none"}}))
  with pytest.raises(ValueError, match=r"has format version 99; this jaxrnn reads 1"):
    jaxrnn.io.load(tmp_path / "future")
  (tmp_path / "odd").write_bytes(serialization.msgpack_serialize(
      {"format": "jaxrnn.params", "version": 1, "tree": {"t": "set"}}))
  with pytest.raises(ValueError, match=r"tree has an unknown entry 'set'"):
    jaxrnn.io.load(tmp_path / "odd")
  with pytest.raises(FileNotFoundError):
    jaxrnn.io.load(tmp_path / "missing")


class Kind(str, enum.Enum):
  GRU = "gru"


class Size(enum.IntEnum):
  TWO = 2


def test_the_namedtuples_of_train_tasks_seq2seq_and_optax_come_back_without_being_named(
    tmp_path):
  import optax
  from jaxrnn import seq2seq, tasks, train
  model = tasks.readout_model(jaxrnn.lstm(4), 2)
  params = model.init(jax.random.key(0), 3)
  translator = seq2seq.seq2seq(vocab_size=5, hidden_size=4, src_length=3)
  schedule = optax.warmup_cosine_decay_schedule(0.0, 1e-3, 10, 100)
  opt = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(schedule))
  trees = {"model": params, "seq2seq": translator.init(jax.random.key(0)),
           "state": train.TrainState(params, (), jnp.zeros((), jnp.int32)),
           "optax": train.init_state(params, opt),     # EmptyState, ScaleByAdamState, ...
           # What a server rebuilds the model from, beside its params.
           "serving": {"params": params, "vocab": tasks.Vocab.from_text("héllo wörld"),
                       "config": {"cell": "lstm", "hidden": 4, "dropout": 0.1,
                                  "kind": Kind.GRU, "layers": Size.TWO, "name": np.str_("a")}}}
  for name, tree in trees.items():
    jaxrnn.io.save(tmp_path / f"{name}.msgpack", tree)
    back = jaxrnn.io.load(tmp_path / f"{name}.msgpack")
    assert jax.tree.structure(back) == jax.tree.structure(tree), name
  assert back["vocab"] == trees["serving"]["vocab"] and back["config"] == trees["serving"]["config"]
  assert back["config"]["kind"] == "gru" and type(back["config"]["kind"]) is str
  assert back["config"]["layers"] == 2 and type(back["config"]["layers"]) is int
  with pytest.raises(TypeError, match=r"tree\['s'\] is a str that is not valid UTF-8"):
    jaxrnn.io.save(tmp_path / "bad.msgpack", {"s": "\ud800"})


def test_save_into_a_missing_directory_names_it(tmp_path):
  params = jaxrnn.lstm(2).init(jax.random.key(0), 2)
  with pytest.raises(FileNotFoundError, match=r"which does not exist.*os.makedirs"):
    jaxrnn.io.save(tmp_path / "missing" / "p.msgpack", params)
  with pytest.raises(FileNotFoundError, match="is a directory"):
    jaxrnn.io.save(tmp_path, params)
  assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("cell", [jaxrnn.lstm(6), jaxrnn.gru(6), jaxrnn.simple_rnn(6)],
                         ids=["lstm", "gru", "rnn"])
def test_jax_export_with_symbolic_batch_and_time_serializes_and_round_trips(cell):
  # jaxrnn's NamedTuples are registered for jax.export's serialization, the
  # GRU kernel once compared a symbolic batch with an int, and unroll=8 (a
  # GPU's default) could not unroll a loop over a symbolic time: it runs
  # unrolled by 1 there.
  from jax import export
  params = cell.init(jax.random.key(0), 3)
  runs = {
      "scan_batch": lambda p, xs: jaxrnn.scan_batch(cell, p, xs),
      "scan_batch, unroll=8": lambda p, xs: jaxrnn.scan_batch(cell, p, xs, unroll=8),
      "vmap(scan), unroll=8": lambda p, xs: jax.vmap(
          lambda x: jaxrnn.scan(cell, p, x, unroll=8))(xs),
      "vmap(scan), unroll=True": lambda p, xs: jax.vmap(
          lambda x: jaxrnn.scan(cell, p, x, unroll=True))(xs),
      "apply_batch, unroll=8": lambda p, xs: jaxrnn.apply_batch(
          jaxrnn.rnn(cell, unroll=8, reverse=True), p, xs),
  }
  spec = jax.ShapeDtypeStruct(export.symbolic_shape("b, t, 3"), jnp.float32)
  for name, run in runs.items():
    run = jax.jit(run)
    exported = export.deserialize(export.export(run)(params, spec).serialize())
    for shape in [(1, 4, 3), (5, 9, 3)]:
      xs = jax.random.normal(jax.random.key(1), shape)
      got, want = exported.call(params, xs), run(params, xs)
      assert jax.tree.structure(got) == jax.tree.structure(want), name
      for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6, err_msg=name)
