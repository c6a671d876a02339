"""Tests of the training data: data sets, sources, the grain pipeline.

tools/trainer/data.py (the shipped data), sources.py (random-access
sources), datasets.py (the built-in dataset factories) and pipeline.py
(shuffled, per-process batches with a checkpointable position).
"""

import doctest
import gzip
import json
import os

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np

from tools.trainer import config_schema
from tools.trainer import data
from tools.trainer import datasets
from tools.trainer import pipeline
from tools.trainer import sources
import quick_exit  # tests/quick_exit.py, beside this file


def _json_round_trip(state):
  return json.loads(json.dumps(state))


def _assert_batches_equal(test, a, b):
  if isinstance(a, dict):
    test.assertEqual(sorted(a), sorted(b))
    a, b = [a[k] for k in sorted(a)], [b[k] for k in sorted(b)]
  test.assertEqual(len(a), len(b))
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x, y)
    test.assertEqual(x.dtype, y.dtype)


class DocstringTest(parameterized.TestCase):

  @parameterized.named_parameters(("data", data), ("sources", sources),
                                  ("datasets", datasets),
                                  ("pipeline", pipeline))
  def test_examples(self, module):
    result = doctest.testmod(
        module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    self.assertGreater(result.attempted, 0)
    self.assertEqual(result.failed, 0, "see the doctest output above")


class DigitsTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.digits = data.load_digits()

  def test_shapes_dtypes_and_ranges(self):
    (x, y), (tx, ty) = self.digits
    self.assertEqual(x.shape, (1437, 8, 8, 1))
    self.assertEqual(tx.shape, (360, 8, 8, 1))
    self.assertEqual((y.shape, ty.shape), ((1437,), (360,)))
    self.assertEqual((x.dtype, y.dtype), (np.float32, np.int32))
    self.assertEqual((float(x.min()), float(x.max())), (0.0, 1.0))
    # Pixels are counts 0..16 scaled by 1/16.
    np.testing.assert_array_equal(x * 16, np.round(x * 16))
    for labels in (y, ty):
      self.assertEqual(sorted(set(labels.tolist())), list(range(10)))

  def test_split_is_fixed(self):
    (x, y), (tx, ty) = self.digits
    # Pinned: any change of the split (or of the data) changes these.
    self.assertEqual(np.bincount(ty).tolist(),
                     [37, 36, 28, 34, 38, 36, 29, 38, 43, 41])
    self.assertEqual(ty[:10].tolist(), [7, 3, 4, 4, 0, 5, 6, 8, 6, 6])
    self.assertEqual(data.fingerprint(tx, ty), data.fingerprint(
        *data.load_digits().test))
    # Train and test partition the 1797 examples.
    all_rows = np.concatenate([x, tx]).reshape(1797, 64)
    with gzip.open(data.DIGITS_PATH, "rt") as f:
      table = np.loadtxt(f, delimiter=",")
    key = lambda rows: sorted(map(bytes, (rows * 16).astype(np.uint8)))
    self.assertEqual(key(all_rows), key(table[:, :64] / 16))
    self.assertEqual(np.bincount(np.concatenate([y, ty])).tolist(),
                     np.bincount(table[:, 64].astype(int)).tolist())

  def test_missing_file_is_a_clear_error(self):
    with self.assertRaisesRegex(FileNotFoundError, "third_party/uci_digits"):
      data.load_digits("/nonexistent/digits.csv.gz")

  def test_fixed_permutation_independent_of_numpy_generator(self):
    perm = data.fixed_permutation(10, 0)
    self.assertEqual(sorted(perm.tolist()), list(range(10)))
    np.testing.assert_array_equal(perm, data.fixed_permutation(10, 0))
    self.assertFalse(np.array_equal(perm, data.fixed_permutation(10, 1)))


class CharsTest(absltest.TestCase):

  def _fake_stdlib(self, n=20):
    directory = self.create_tempdir().full_path
    for i in range(n):
      with open(os.path.join(directory, f"m{i:02d}.py"), "wb") as f:
        f.write(f"# file {i}\n".encode())
    os.mkdir(os.path.join(directory, "pkg.py.d"))
    with open(os.path.join(directory, "notes.txt"), "w") as f:
      f.write("not python")
    return directory

  def test_every_tenth_file_is_test(self):
    text = data.load_chars(directory=self._fake_stdlib())
    self.assertEqual(text.test_files, ("m09.py", "m19.py"))
    self.assertLen(text.train_files, 18)
    self.assertEqual(text.test.tobytes(), b"# file 9\n# file 19\n")
    self.assertEqual(
        text.train.tobytes(),
        b"".join(f"# file {i}\n".encode() for i in range(20)
                 if i not in (9, 19)))
    self.assertEqual(text.train.dtype, np.uint8)

  def test_max_bytes(self):
    text = data.load_chars(max_bytes=15, directory=self._fake_stdlib())
    self.assertEqual(text.train.tobytes(), b"# file 0\n# file")
    self.assertEqual(text.test.tobytes(), b"# file 9\n# file")

  def test_real_stdlib_is_deterministic_and_disjoint(self):
    a = data.load_chars(max_bytes=100_000)
    b = data.load_chars(max_bytes=100_000)
    np.testing.assert_array_equal(a.train, b.train)
    np.testing.assert_array_equal(a.test, b.test)
    self.assertEqual((a.train.size, a.test.size), (100_000, 100_000))
    self.assertEmpty(set(a.train_files) & set(a.test_files))
    files = [os.path.basename(p) for p in data.stdlib_source_files()]
    self.assertEqual(files, sorted(files))
    self.assertEqual(a.test_files[0], files[9])
    self.assertIn(b"import", a.train.tobytes())

  def test_too_few_files(self):
    with self.assertRaisesRegex(ValueError, "need at least 10"):
      data.load_chars(directory=self._fake_stdlib(n=3))


class PerExampleSource:
  """Only len and __getitem__ (the generic read path)."""

  def __init__(self, x, y):
    self.x, self.y = x, y

  def __len__(self):
    return len(self.x)

  def __getitem__(self, i):
    return self.x[i], self.y[i]


class SourcesTest(parameterized.TestCase):

  def test_array_source_and_npz(self):
    x, y = np.arange(20.0).reshape(10, 2), np.arange(10) % 3
    path = os.path.join(self.create_tempdir().full_path, "d.npz")
    np.savez(path, a=x, b=y)
    src = sources.ArraySource.from_npz(path, "a", "b")
    self.assertLen(src, 10)
    np.testing.assert_array_equal(src[3][0], x[3])
    bx, by = src.read_batch(np.array([9, 1]))
    np.testing.assert_array_equal(bx, x[[9, 1]])
    np.testing.assert_array_equal(by, y[[9, 1]])
    with self.assertRaisesRegex(ValueError, r"has arrays \['a', 'b'\]"):
      sources.ArraySource.from_npz(path)
    with self.assertRaises(FileNotFoundError):
      sources.ArraySource.from_npz(path + ".missing")
    with self.assertRaisesRegex(ValueError, "same leading"):
      sources.ArraySource(x, y[:3])

  def test_window_source_matches_the_token_array(self):
    tokens = (np.arange(50) * 7 % 256).astype(np.uint8)
    train = sources.WindowSource(tokens, seq_len=8)
    self.assertLen(train, 50 - 8)
    x, y = train[5]
    np.testing.assert_array_equal(x, tokens[5:13])
    np.testing.assert_array_equal(y, tokens[6:14])
    self.assertEqual(x.dtype, np.int32)
    bx, by = train.read_batch(np.array([5, len(train) - 1]))
    np.testing.assert_array_equal(bx[0], x)
    np.testing.assert_array_equal(by[1], tokens[-8:])
    # Tiling windows predict every token after the first exactly once.
    test = sources.WindowSource(tokens, seq_len=7, stride=7)
    labels = np.concatenate([test[i][1] for i in range(len(test))])
    np.testing.assert_array_equal(labels, tokens[1:len(labels) + 1])
    self.assertEqual(len(labels), (len(tokens) - 1) // 7 * 7)
    with self.assertRaises(IndexError):
      test[len(test)]  # pylint: disable=pointless-statement
    with self.assertRaisesRegex(ValueError, "fewer than a window"):
      sources.WindowSource(tokens[:5], seq_len=8)
    with self.assertRaisesRegex(ValueError, "1-D integer"):
      sources.WindowSource(np.zeros((4, 4)), seq_len=2)

  def test_read_examples_same_with_and_without_read_batch(self):
    x, y = np.random.default_rng(0).normal(size=(30, 3)), np.arange(30)
    idx = np.array([4, 29, 0, 4])
    a = sources.read_examples(sources.ArraySource(x, y), idx)
    b = sources.read_examples(PerExampleSource(x, y), idx)
    for u, v in zip(a, b):
      np.testing.assert_array_equal(u, v)

  def test_builtin_datasets(self):
    train, test = datasets.digits(config_schema.base_config())
    np.testing.assert_array_equal(train[7][0], data.load_digits().train[0][7])
    self.assertEqual((len(train), len(test)), (1437, 360))
    config = config_schema.with_model(config_schema.base_config(),
                                      "transformer")
    config.max_bytes, config.seq_len = 10_000, 64
    train, test = datasets.chars(config)
    text = data.load_chars(max_bytes=10_000)
    self.assertLen(train, 10_000 - 64)
    self.assertLen(test, (10_000 - 1) // 64)
    np.testing.assert_array_equal(test[1][0], text.test[64:128])


class TrainPipelineTest(parameterized.TestCase):

  def setUp(self):
    super().setUp()
    self.x = np.arange(103)
    self.src = sources.ArraySource(self.x, self.x % 10)

  def make(self, **kwargs):
    kwargs = dict(dict(global_batch_size=8, seed=3), **kwargs)
    return pipeline.TrainPipeline(self.src, **kwargs)

  def test_every_epoch_visits_every_example_once(self):
    p = self.make()
    xs = p.next_chunk(103)[0].reshape(-1)  # 8 epochs of 103 examples.
    for e in range(8):
      self.assertEqual(sorted(xs[e * 103:(e + 1) * 103].tolist()),
                       list(range(103)))
    self.assertFalse(np.array_equal(xs[:103], xs[103:206]))  # Reshuffled.
    np.testing.assert_array_equal(p.indices(0), xs[:8])

  def test_order_depends_only_on_the_seed(self):
    a = self.make().next_chunk(5)[0]
    np.testing.assert_array_equal(a, self.make().next_chunk(5)[0])
    b = self.make()
    np.testing.assert_array_equal(
        a, np.stack([b.next_chunk(1)[0][0] for _ in range(5)]))
    self.assertFalse(np.array_equal(a, self.make(seed=4).next_chunk(5)[0]))

  @parameterized.parameters(0, 1, 12, 13, 40)
  def test_restore_continues_exactly(self, at):
    whole = self.make().next_chunk(60)[0]
    p = self.make()
    if at:
      p.next_chunk(at)
    state = json.loads(json.dumps(p.state()))  # As in a checkpoint.
    self.assertEqual(state["grain"], {"next_index": at})
    q = self.make()
    q.restore(state)
    np.testing.assert_array_equal(q.next_chunk(60 - at)[0], whole[at:])

  def test_processes_see_disjoint_rows_whose_union_is_the_batch(self):
    whole = self.make().next_chunk(30)[0]
    parts = [self.make(rows=(4 * i, 4 * i + 4)).next_chunk(30)[0]
             for i in range(2)]
    np.testing.assert_array_equal(np.concatenate(parts, axis=1), whole)
    # The position counts global batches: a 2-process run resumes on 1.
    p = self.make(rows=(4, 8))
    p.next_chunk(7)
    q = self.make()
    q.restore(p.state())
    np.testing.assert_array_equal(q.next_chunk(1)[0][0], whole[7])

  def test_generic_sources_and_nested_shapes(self):
    src = PerExampleSource(np.arange(40.0).reshape(10, 2, 2), np.arange(10))
    p = pipeline.TrainPipeline(src, global_batch_size=4, seed=0)
    x, y = p.next_chunk(3)
    self.assertEqual((x.shape, y.shape), ((3, 4, 2, 2), (3, 4)))
    np.testing.assert_array_equal(x[..., 0, 0], 4 * y)

  def test_bad_positions_and_rows(self):
    p = self.make()
    for state, pattern in ((dict(p.state(), seed=9), "seed=9"),
                           (dict(p.state(), global_batch_size=4),
                            "global_batch_size=4"),
                           (dict(p.state(), num_examples=7), "num_examples"),
                           ({"epoch": 0, "index": 3}, "Not a TrainPipeline")):
      with self.assertRaisesRegex(ValueError, pattern):
        self.make().restore(state)
    with self.assertRaisesRegex(ValueError, "rows=.*inside a global batch"):
      self.make(rows=(4, 12))
    with self.assertRaisesRegex(ValueError, "empty"):
      pipeline.TrainPipeline(sources.ArraySource(np.zeros((0,)),
                                                 np.zeros((0,))),
                             global_batch_size=2, seed=0)

  def test_eval_batches_cover_everything_once(self):
    batches = pipeline.eval_batches(self.src, batch_size=16)
    self.assertLen(batches, 7)
    xs = np.concatenate([b[0][m > 0] for b, m in batches])
    np.testing.assert_array_equal(xs, self.x)
    self.assertEqual(batches[-1][0][0].shape, (16,))
    self.assertLen(pipeline.eval_batches(self.src, 16, max_batches=2), 2)


if __name__ == "__main__":
  quick_exit.main()
