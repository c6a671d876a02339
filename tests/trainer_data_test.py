"""Tests for tools/trainer/data.py: data sets and restorable batchers."""

import doctest
import gzip
import json
import os

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np

from tools.trainer import data


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

  @parameterized.named_parameters(("data", data),)
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
    perm = data._fixed_permutation(10, 0)  # pylint: disable=protected-access
    self.assertEqual(sorted(perm.tolist()), list(range(10)))
    np.testing.assert_array_equal(perm, data._fixed_permutation(10, 0))  # pylint: disable=protected-access
    self.assertFalse(np.array_equal(perm, data._fixed_permutation(10, 1)))  # pylint: disable=protected-access


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


class ArrayBatcherTest(parameterized.TestCase):

  def setUp(self):
    super().setUp()
    self.x = np.arange(50 * 3, dtype=np.float32).reshape(50, 3)
    self.y = np.arange(50, dtype=np.int32)

  def _make(self, seed=0, batch_size=8):
    return data.ArrayBatcher((self.x, self.y), batch_size=batch_size,
                             seed=seed)

  def test_epochs_are_permutations(self):
    b = self._make(batch_size=10)
    self.assertEqual(b.steps_per_epoch, 5)
    epochs = []
    for _ in range(3):
      ys = np.concatenate([b.next()[1] for _ in range(5)])
      self.assertEqual(sorted(ys.tolist()), list(range(50)))
      epochs.append(ys)
    self.assertFalse(np.array_equal(epochs[0], epochs[1]))
    self.assertEqual(b.state()["epoch"], 3)

  def test_structure_and_pairing(self):
    b = data.ArrayBatcher({"image": self.x, "label": self.y}, batch_size=8)
    batch = b.next()
    self.assertEqual(sorted(batch), ["image", "label"])
    np.testing.assert_array_equal(batch["image"], self.x[batch["label"]])

  def test_same_seed_same_batches_other_seed_differs(self):
    a = self._make(seed=3).next_chunk(20)
    b = self._make(seed=3).next_chunk(20)
    c = self._make(seed=4).next_chunk(20)
    _assert_batches_equal(self, a, b)
    self.assertFalse(np.array_equal(a[1], c[1]))

  @parameterized.parameters(1, 2, 6, 7, 13)
  def test_next_chunk_equals_stacked_next(self, k):
    ref = self._make()
    chunked = self._make()
    for _ in range(3):  # crosses epoch boundaries (6 batches per epoch)
      expected = [ref.next() for _ in range(k)]
      got = chunked.next_chunk(k)
      self.assertEqual(got[0].shape, (k, 8, 3))
      self.assertEqual(got[1].shape, (k, 8))
      for i in range(k):
        _assert_batches_equal(self, (got[0][i], got[1][i]), expected[i])
      self.assertEqual(ref.state(), chunked.state())

  @parameterized.product(stop=[0, 1, 5, 6, 13, 20], chunk=[1, 4])
  def test_restore_continues_exactly(self, stop, chunk):
    total = 30
    reference = self._make(seed=7)
    expected = [reference.next() for _ in range(total)]

    first = self._make(seed=7)
    for i in range(stop):  # mix next() and next_chunk() before stopping
      if i % 2:
        first.next()
      else:
        first.next_chunk(1)
    saved = _json_round_trip(first.state())
    del first

    resumed = self._make(seed=7)
    resumed.restore(saved)
    got = []
    while len(got) < total - stop:
      xs, ys = resumed.next_chunk(chunk)
      got.extend(zip(xs, ys))
    for g, e in zip(got, expected[stop:]):
      _assert_batches_equal(self, g, e)

  def test_restore_rejects_other_config(self):
    saved = self._make(seed=1, batch_size=8).state()
    with self.assertRaisesRegex(ValueError, "batch_size=8.*batch_size=10"):
      self._make(seed=1, batch_size=10).restore(saved)
    with self.assertRaisesRegex(ValueError, "seed=1.*seed=2"):
      self._make(seed=2, batch_size=8).restore(saved)
    with self.assertRaisesRegex(ValueError, "expected .*epoch"):
      self._make().restore({"step": 3})
    with self.assertRaisesRegex(TypeError, "state\\(\\)"):
      self._make().restore([0, 1])
    bad = dict(self._make().state(), index=99)
    with self.assertRaisesRegex(ValueError, "out of range"):
      self._make().restore(bad)

  def test_bad_arguments(self):
    with self.assertRaisesRegex(ValueError, "batch_size <= 50"):
      self._make(batch_size=51)
    with self.assertRaisesRegex(ValueError, "same leading"):
      data.ArrayBatcher((self.x, self.y[:10]), batch_size=2)
    with self.assertRaisesRegex(TypeError, "tuple or dict"):
      data.ArrayBatcher(self.x, batch_size=2)
    with self.assertRaisesRegex(TypeError, "seed must be an int"):
      self._make(seed=1.5)
    with self.assertRaisesRegex(ValueError, "k must be >= 1"):
      self._make().next_chunk(0)

  def test_eval_batches_cover_everything_once(self):
    seen, weights = [], 0.0
    for (bx, by), mask in data.eval_batches((self.x, self.y), batch_size=16):
      self.assertEqual(bx.shape, (16, 3))
      seen.extend(by[mask == 1].tolist())
      weights += mask.sum()
    self.assertEqual(seen, list(range(50)))
    self.assertEqual(weights, 50)


class WindowBatcherTest(parameterized.TestCase):

  def setUp(self):
    super().setUp()
    self.tokens = np.frombuffer(bytes(range(256)) * 40, dtype=np.uint8)

  def _make(self, seed=0):
    return data.WindowBatcher(self.tokens, batch_size=4, seq_len=16,
                              seed=seed)

  def test_windows_are_contiguous_slices(self):
    w = self._make().next_chunk(5)
    self.assertEqual((w.shape, w.dtype), ((5, 4, 17), np.int32))
    diffs = np.diff(w, axis=-1) % 256
    np.testing.assert_array_equal(diffs, np.ones_like(diffs))

  def test_next_chunk_equals_stacked_next(self):
    ref, chunked = self._make(), self._make()
    expected = np.stack([ref.next() for _ in range(7)])
    np.testing.assert_array_equal(chunked.next_chunk(7), expected)
    self.assertEqual(chunked.state()["step"], 7)

  @parameterized.parameters(0, 1, 9)
  def test_restore_continues_exactly(self, stop):
    expected = self._make(seed=5).next_chunk(20)
    first = self._make(seed=5)
    for _ in range(stop):
      first.next()
    resumed = self._make(seed=5)
    resumed.restore(_json_round_trip(first.state()))
    got = np.concatenate([resumed.next_chunk(1),
                          resumed.next_chunk(19 - stop)])
    np.testing.assert_array_equal(got, expected[stop:])

  def test_seeds_and_steps_differ(self):
    a = self._make(seed=0).next_chunk(2)
    b = self._make(seed=1).next_chunk(2)
    self.assertFalse(np.array_equal(a, b))
    self.assertFalse(np.array_equal(a[0], a[1]))

  def test_restore_rejects_other_config(self):
    saved = self._make(seed=0).state()
    other = data.WindowBatcher(self.tokens, batch_size=4, seq_len=8)
    with self.assertRaisesRegex(ValueError, "seq_len=16.*seq_len=8"):
      other.restore(saved)

  def test_bad_arguments(self):
    with self.assertRaisesRegex(ValueError, "shorter seq_len"):
      data.WindowBatcher(np.arange(5), batch_size=1, seq_len=5)
    with self.assertRaisesRegex(ValueError, "1-D integer"):
      data.WindowBatcher(np.zeros((4, 4)), batch_size=1, seq_len=2)

  def test_eval_windows_predict_every_token_once(self):
    tokens = np.arange(1 + 4 * 3 * 5)
    windows = list(data.eval_windows(tokens, batch_size=3, seq_len=4))
    self.assertLen(windows, 5)
    targets = np.concatenate([w[:, 1:].reshape(-1) for w in windows])
    np.testing.assert_array_equal(targets, tokens[1:])
    self.assertLen(list(data.eval_windows(tokens, 3, 4, max_batches=2)), 2)

  def test_char_pipeline_end_to_end(self):
    text = data.load_chars(max_bytes=50_000)
    batcher = data.WindowBatcher(text.train, batch_size=8, seq_len=32)
    w = batcher.next_chunk(3)
    self.assertEqual(w.shape, (3, 8, 33))
    self.assertTrue(((w >= 0) & (w < data.VOCAB_SIZE)).all())


if __name__ == "__main__":
  absltest.main()
