"""The issue-10 studies: leakage by unlearning method, and the defenses' utility/attack trade-off.

Both write into one run folder: ``results.jsonl`` (a row per attack on a forget set), ``summary.json``
(config, baselines, aggregated table, environment), ``table.md`` and PNG figures.
"""

from unlearnleak.experiments.studies.defenses import DefensesStudyConfig, run_defenses_study, summarize_defenses
from unlearnleak.experiments.studies.methods import MethodsStudyConfig, run_methods_study, summarize_methods
from unlearnleak.experiments.studies.run import run_study
from unlearnleak.experiments.studies.setting import StudySetting

__all__ = ["DefensesStudyConfig", "MethodsStudyConfig", "StudySetting", "run_defenses_study", "run_methods_study",
           "run_study", "summarize_defenses", "summarize_methods"]
