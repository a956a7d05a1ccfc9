"""``seqwatch.pipelines.runners``: the settings seqwatch gives particular runners, and on Prism the reason for
them: without ``prism_disable_sdf_split``, Prism 2.77 lets two bundles process one key of a stateful step at once
(measured: each of four runs of the test below lost or split a key's state)."""
import time

import apache_beam as beam
import pytest
from apache_beam import coders
from apache_beam.options.pipeline_options import DebugOptions, PipelineOptions
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import BagStateSpec, TimerSpec, on_timer
from apache_beam.testing.util import assert_that, equal_to

from seqwatch.pipelines.runners import PRISM_NO_SPLIT, apply_runner_fixes, runner_name


@pytest.mark.parametrize("flags, fixed", [
    ([], True),  # no runner named: the DirectRunner, which in Beam 2.77 may hand the job to Prism
    (["--runner=PrismRunner"], True),
    (["--runner=DirectRunner"], True),
    (["--runner=apache_beam.runners.portability.prism_runner.PrismRunner"], True),
    (["--runner=FlinkRunner"], False),
    (["--runner=DataflowRunner"], False),
])
def test_runs_that_can_end_on_prism_get_its_split_switch_and_others_nothing(flags, fixed):
    options = apply_runner_fixes(PipelineOptions(flags + ["--experiments=other"]))
    experiments = options.view_as(DebugOptions).experiments
    assert (PRISM_NO_SPLIT in experiments) == fixed and "other" in experiments
    assert apply_runner_fixes(options).view_as(DebugOptions).experiments.count(PRISM_NO_SPLIT) == int(fixed)


def test_runner_name_is_the_class_name_in_lower_case():
    assert runner_name(PipelineOptions(["--runner=apache_beam.runners.portability.prism_runner.PrismRunner"])) == \
        "prismrunner"
    assert runner_name(PipelineOptions([])) == ""


class _CountPerKey(beam.DoFn):
    """Every value of a key into a bag; the bag's size once, when the input is done. A few slow elements make
    Prism's progress checks see a stuck bundle and split it."""

    BAG = BagStateSpec("bag", coders.VarIntCoder())
    DONE = TimerSpec("done", TimeDomain.WATERMARK)

    def process(self, element, bag=beam.DoFn.StateParam(BAG), done=beam.DoFn.TimerParam(DONE)):
        if element[1] % 40 == 0:
            time.sleep(0.2)
        bag.add(element[1])
        done.set(beam.window.GlobalWindow().max_timestamp())

    @on_timer(DONE)
    def count(self, key=beam.DoFn.KeyParam, bag=beam.DoFn.StateParam(BAG)):
        yield key, len(list(bag.read()))


@pytest.mark.slow
def test_on_prism_a_stateful_step_sees_every_element_of_a_key_in_one_state(prism_options):
    """Counted in state, each key's 1,000 values come out once, as one count of 1,000. Without the switch Prism
    split the slow bundles and returned the residual's keys to its scheduler while the primary still held them:
    four runs out of four gave a key twice (467 + 533) or lost half of it (500)."""
    with beam.Pipeline(options=prism_options()) as p:
        counts = (p | beam.Create([(f"k{i % 3}", i) for i in range(3000)])
                  | beam.Reshuffle()
                  | beam.ParDo(_CountPerKey()))
        assert_that(counts, equal_to([("k0", 1000), ("k1", 1000), ("k2", 1000)]))
