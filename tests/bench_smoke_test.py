"""Smoke test of the benchmark command (`python3 -m tools.bench.run_all`).

Runs the quick mode on the smallest workload (W1) for pax_haiku against raw
Haiku only, through the real command line, and checks the report's shape and
one real property: pax_haiku's jitted train step compiles to exactly as many
HLO instructions as the hand-written Haiku + optax step. No timing is
asserted (the numbers of a quick run on a shared machine mean nothing), so
the commands compile at XLA's LLVM level 0 like most tests (tests/BUILD):
the HLO passes, and so the instructions compared, are the same.
"""

import json
import os
import subprocess
import sys
import tempfile

from absl.testing import absltest

from tools.bench import report_sections
from tools.bench import startup_report
import quick_exit  # tests/quick_exit.py, beside this file



def _repo_root() -> str:
  """The tree holding tools/bench: the runfiles tree if the test target
  depends on //tools/bench, else the source tree this file comes from."""
  for path in (os.path.abspath(__file__), os.path.realpath(__file__)):
    root = os.path.dirname(os.path.dirname(path))
    if os.path.exists(os.path.join(root, "tools", "bench", "run_all.py")):
      return root
  raise FileNotFoundError("tools/bench/run_all.py not found next to tests/")


_ROOT = _repo_root()

# The columns of every workload table in BENCHMARKS.md.
_COLUMNS = ("framework", "eager step (ms)", "eager ×", "fused scan (ms/step)",
            "scan ×", "compile (s)", "compile ×", "HLO instr.", "HLO ×",
            "flatten+unflatten (µs)", "flatten ×", "params out+in (µs)",
            "first loss")


_STARTUP = "## Startup: kept\n\n| model | pax |\n|---|---|\n| m | 1.00 |\n"


class BenchSmokeTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.tmp = tempfile.mkdtemp()
    cls.md_path = os.path.join(cls.tmp, "BENCHMARKS.md")
    cls.json_path = os.path.join(cls.tmp, "bench.json")
    # A report that already has the section `tools.bench.startup --out`
    # writes: run_all rewrites the rest and keeps it.
    with open(cls.md_path, "w") as f:
      f.write("# Old report\n\n## W1: old\nold rows\n\n" + _STARTUP)
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (_ROOT, env.get("PYTHONPATH")) if p)
    cls.proc = subprocess.run(
        [sys.executable, "-m", "tools.bench.run_all", "--quick",
         "--workloads=W1", "--frameworks=haiku,pax_haiku",
         f"--out={cls.md_path}", f"--json={cls.json_path}"],
        cwd=_ROOT, env=env, capture_output=True, text=True, timeout=300,
        check=False)

  def test_command_succeeds_and_writes_files(self):
    self.assertEqual(self.proc.returncode, 0,
                     msg=self.proc.stdout[-3000:] + self.proc.stderr[-3000:])
    self.assertTrue(os.path.exists(self.md_path))
    self.assertTrue(os.path.exists(self.json_path))

  def test_table_has_expected_columns_and_rows(self):
    with open(self.md_path) as f:
      lines = f.read().splitlines()
    header = "| " + " | ".join(_COLUMNS) + " |"
    self.assertIn(header, lines)
    start = lines.index(header)
    self.assertEqual(lines[start + 1], "|" + "---|" * len(_COLUMNS))
    rows = lines[start + 2:start + 7]
    self.assertEqual([r.split("|")[1].strip() for r in rows],
                     ["haiku", "pax_haiku", "pax_haiku [nets_mlp]",
                      "haiku (donated)", "pax_haiku (donated)"])
    for row in rows:
      self.assertLen(row.strip().strip("|").split("|"), len(_COLUMNS))
    self.assertEqual(lines[start + 7], "")  # Only the rows asked for.
    text = "\n".join(lines)
    self.assertIn("## pax_haiku against its targets", text)
    self.assertIn("## Donated steps", text)
    self.assertIn("JAX floor of the model's flatten+unflatten", text)

  def test_keeps_the_startup_section_and_replaces_the_rest(self):
    with open(self.md_path) as f:
      text = f.read()
    self.assertTrue(text.endswith("\n\n" + _STARTUP), text[-300:])
    self.assertEqual(text.count("## Startup"), 1)
    self.assertNotIn("old rows", text)
    self.assertNotIn("# Old report", text)

  def test_pax_haiku_hlo_equals_raw_haiku(self):
    with open(self.json_path) as f:
      results = json.load(f)
    rows = results["workloads"]["W1"]["rows"]
    self.assertEqual(set(rows), {"haiku", "pax_haiku", "pax_haiku [nets_mlp]",
                                 "haiku (donated)", "pax_haiku (donated)"})
    # The recommended donating step compiles to raw Haiku's donating step.
    self.assertEqual(
        results["workloads"]["W1"]["same_program"]["pax_haiku (donated)"],
        {"step": True, "scan": None})
    self.assertEqual(rows["pax_haiku (donated)"]["reference"],
                     "haiku (donated)")
    self.assertIsNotNone(rows["pax_haiku (donated)"][
        "eager_ratio_to_reference"])
    # Both pax_haiku forms compile to raw Haiku's program.
    for name in ("pax_haiku", "pax_haiku [nets_mlp]"):
      self.assertEqual(results["workloads"]["W1"]["same_program"][name],
                       {"step": True, "scan": True})
      self.assertGreater(rows[name]["flatten_floor_us"], 0)
      self.assertGreater(rows[name]["flatten_floor_no_meta_us"], 0)
    self.assertGreater(rows["haiku"]["hlo_instructions"], 0)
    self.assertEqual(rows["pax_haiku"]["hlo_instructions"],
                     rows["haiku"]["hlo_instructions"])
    self.assertEqual(rows["pax_haiku"]["scan_hlo_instructions"],
                     rows["haiku"]["scan_hlo_instructions"])
    # Not only as many instructions: the same program up to argument names.
    hlo = results["workloads"]["W1"]["hlo_pax_vs_haiku"]
    self.assertTrue(hlo["same_program"])
    self.assertTrue(hlo["scan_same_program"])
    # Same weights, same batch: the same first loss.
    self.assertAlmostEqual(rows["pax_haiku"]["first_loss"],
                           rows["haiku"]["first_loss"], places=5)
    # Peers not requested are not run (and not reported as skipped).
    self.assertEqual(results["meta"]["skipped"], {})


class DataclassFloorTest(absltest.TestCase):

  def test_bare_mirror_has_the_same_leaves_and_node_count(self):
    import doctest  # pylint: disable=g-import-not-at-top
    import jax  # pylint: disable=g-import-not-at-top
    import pax_haiku as pax  # pylint: disable=g-import-not-at-top
    from tools.bench import dataclass_floor  # pylint: disable=g-import-not-at-top
    failed, _ = doctest.testmod(dataclass_floor, extraglobs={"jax": jax})
    self.assertEqual(failed, 0)
    net = pax.Sequential(pax.Linear(2, 3), jax.nn.relu, pax.Linear(3, 1))
    bare = dataclass_floor.bare_mirror(net)
    leaves, treedef = jax.tree_util.tree_flatten(net)
    bare_leaves, bare_def = jax.tree_util.tree_flatten(bare)
    self.assertEqual([id(x) for x in leaves], [id(x) for x in bare_leaves])
    self.assertEqual(treedef.num_nodes, bare_def.num_nodes)
    self.assertIsNot(type(bare.layers[0]), type(net.layers[0]))


  def test_core_bench_measures_pax_beside_its_floor(self):
    from tools.bench import core_bench  # pylint: disable=g-import-not-at-top
    res = core_bench.measure(rounds=1)
    for key in ("pax_flatten_unflatten", "bare_dataclass_flatten_unflatten",
                "pax_with_relu_flatten_unflatten",
                "bare_dataclass_with_relu_flatten_unflatten",
                "bare_dataclass_with_relu_no_meta_flatten_unflatten",
                "pax_parameters_plus_update_new_leaves"):
      self.assertGreater(res[key], 0.0, key)
    # Same leaves either way: relu layers add nodes, not leaves.
    net, _ = core_bench.build()
    import jax  # pylint: disable=g-import-not-at-top
    self.assertLen(jax.tree_util.tree_leaves(core_bench.with_activations(net)),
                   2 * core_bench.DEPTH)


class ReportSectionsTest(absltest.TestCase):

  def test_examples(self):
    import doctest  # pylint: disable=g-import-not-at-top
    failed, attempted = doctest.testmod(report_sections)
    self.assertEqual(failed, 0)
    self.assertGreater(attempted, 0)

  def test_replace_appends_a_missing_section_and_keeps_the_others(self):
    old = "# R\n\n## A\na\n\n## B\nb\n"
    self.assertEqual(
        report_sections.replace_section(old, "## Startup", "## Startup\ns\n"),
        old + "\n## Startup\ns\n")
    self.assertEqual(report_sections.replace_section(old, "## A", "## A\nz\n"),
                     "# R\n\n## A\nz\n\n## B\nb\n")
    # A section that the new text has already is not added again.
    self.assertEqual(
        report_sections.keep_sections("# N\n\n## B\nnew\n", old, ["## B"]),
        "# N\n\n## B\nnew\n")
    self.assertIsNone(report_sections.find_section(old, "## C"))

  def test_startup_writes_its_section_from_a_result(self):
    result = {"resnet18/pax": 2.0, "resnet18/pax_warm": 1.0,
              "resnet18/haiku_eager": 10.0, "resnet18/haiku_jit": 8.0,
              "resnet18/pax_vs_haiku_eager": 0.2,
              "resnet18/pax_vs_haiku_jit": 0.25,
              "train/first_step_cold": 5.0, "train/first_step_warm": 2.0,
              "train/warm_vs_cold": 0.4}
    section = startup_report.markdown(result, 3, "today")
    self.assertTrue(section.startswith(report_sections.STARTUP_HEADING))
    self.assertIn("| `pax.nets.ResNet18(3, 10)` | 2.00 | 1.00 | 10.00 | 8.00 "
                  "| 0.200x | 0.250x |", section)
    self.assertIn("cold cache 5.00 s, warm cache 2.00 s, **0.400x**", section)
    self.assertNotIn("TransformerLM", section)  # Not measured, not shown.
    report = report_sections.replace_section(
        "# R\n\n" + _STARTUP + "\n## Method\nm\n",
        report_sections.STARTUP_HEADING, section)
    self.assertEqual(report, "# R\n\n" + section + "\n## Method\nm\n")


class CompileBreakdownTest(absltest.TestCase):

  def test_command_splits_compile_time_per_row(self):
    # A persistent cache in the environment (tools/test.sh sets one for the
    # suite) is not used: the command times real compilations.
    cache = self.create_tempdir().full_path
    env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_COMPILATION_CACHE_DIR=cache,
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
               JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (_ROOT, env.get("PYTHONPATH")) if p)
    proc = subprocess.run(
        [sys.executable, "-m", "tools.bench.compile_breakdown",
         "--workload=W1", "--rounds=1"],
        cwd=_ROOT, env=env, capture_output=True, text=True, timeout=300,
        check=False)
    self.assertEqual(proc.returncode, 0, msg=proc.stderr[-3000:])
    rows = [l.split()[0:2] for l in proc.stdout.splitlines()
            if "trace" in l and "compile" in l]
    self.assertEqual([r[0] for r in rows], ["haiku", "pax_haiku", "pax_haiku"])
    for line in proc.stdout.splitlines()[1:]:
      self.assertRegex(line, r"trace \d+\.\d+ .*lower \d+\.\d+ .*compile "
                       r"\d+\.\d+ .*total \d+\.\d+")
    self.assertEqual(os.listdir(cache), [])


class SameProgramTest(absltest.TestCase):

  def test_names_do_not_matter_instructions_do(self):
    from tools.bench import measure  # pylint: disable=g-import-not-at-top
    a = ("HloModule jit_a, entry_computation_layout={(f32[2])->f32[2]}\n"
         "ENTRY %main.3 (layers_0__weight.1: f32[2]) -> f32[2] {\n"
         "  %p.1 = f32[2]{0} parameter(0), metadata={op_name=\"x\"}\n"
         "  ROOT %n.2 = f32[2]{0} negate(%p.1)\n}\n")
    b = (a.replace("jit_a", "jit_b").replace("layers_0__weight", "linear__w")
         .replace("%p.1", "%arg.7").replace('op_name=\"x\"', 'op_name="y"'))
    self.assertTrue(measure.same_program(a, b))
    self.assertFalse(measure.same_program(a, a.replace("negate", "abs")))
    # GPU modules carry a hash of their (named) text: not part of the program.
    gpu = a.replace("jit_a,", 'jit_a, frontend_attributes={'
                    'fingerprint_before_lhs="393c46"},')
    self.assertTrue(measure.same_program(
        gpu, gpu.replace("393c46", "c5a83a").replace("jit_a", "jit_b")))
    self.assertFalse(measure.same_program(a, a.replace("f32[2]{0} neg",
                                                       "f16[2]{0} neg")))


class MeasureDocTest(absltest.TestCase):

  def test_examples(self):
    import doctest  # pylint: disable=g-import-not-at-top
    from tools.bench import measure  # pylint: disable=g-import-not-at-top
    result = doctest.testmod(measure)
    self.assertGreater(result.attempted, 0)
    self.assertEqual(result.failed, 0)


class SampleClockTest(absltest.TestCase):

  def tearDown(self):
    from tools.bench import measure  # pylint: disable=g-import-not-at-top
    measure.set_sample_clock("wall")
    super().tearDown()

  def test_process_clock_counts_this_process_cpu_time(self):
    import time  # pylint: disable=g-import-not-at-top
    from tools.bench import measure  # pylint: disable=g-import-not-at-top
    measure.set_sample_clock("process")
    start, wall = measure.sample_clock(), time.process_time()
    time.sleep(0.05)  # Sleeping costs no CPU time.
    sum(range(200000))
    self.assertLess(measure.sample_clock() - start,
                    time.process_time() - wall + 1e-3)
    self.assertGreater(measure.sample_clock(), start)
    with self.assertRaisesRegex(ValueError, "unknown clock 'cpu'; choose "
                                "from wall, process"):
      measure.set_sample_clock("cpu")


if __name__ == "__main__":
  quick_exit.main()
