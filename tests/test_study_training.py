"""Chapter 1's study as a function: recorded runs in, the rule checked per model, a typed result out."""

import types

import numpy as np

from widedeep import experiments, profiles
from widedeep.book import results, sentences
from widedeep.studies import stored, training

SMOKE = profiles.load_profile("smoke")


def recorded_run(config, train_acc: float):
    """A run as its records give it: its config and metrics, no model."""
    metrics = {"parameters": 1000 * config.depth, "wall_time_s": 1.0, "hardware": "test",
               "final": {"train_acc": train_acc, "val_acc": 0.7, "test_acc": 0.7}}
    return types.SimpleNamespace(config=config, metrics=metrics)


def test_the_training_study_checks_the_rule_per_model_and_is_the_schema():
    configs = experiments.training_grid(SMOKE)
    runs = tuple(recorded_run(c, 0.95 if i == 0 else 1.0) for i, c in enumerate(configs))
    settings = training.Settings(SMOKE.public(), 0.99)
    result = training.study(training.Models(runs, None, 2), settings)
    assert result.rule == {"min_train_acc": 0.99, "met": len(configs) - 1, "models": len(configs),
                           "missed": [configs[0].name()]}
    assert list(result.models) == [c.name() for c in configs] and result.precision_check is None
    assert sentences.precision_sentence(result.precision_check, result.missing).startswith("not run here: 2")
    assert tuple(stored(result)) == results.CHAPTERS[training.CHAPTER].keys
    results.validate({"schema_version": results.SCHEMA_VERSION,
                      "provenance": dict.fromkeys(results.PROVENANCE_KEYS, ""), **results._plain(stored(result))},
                     training.CHAPTER)
    training.study(training.Models(runs[:1], None, 0), training.Settings(SMOKE.public(), None))   # another in between
    np.testing.assert_equal(stored(training.study(training.Models(runs, None, 2), settings)), stored(result))
