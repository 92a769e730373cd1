"""The mutation list still fits the code: each mutant's original text occurs exactly once in its file
and the mutant changes it (the check itself, ``python -m tests.mutation.run``, is too slow for CI)."""

from __future__ import annotations

import pytest

from tests.helpers import ROOT
from tests.mutation.mutants import MUTANTS


def test_mutant_ids_are_unique_and_the_list_is_long_enough():
    ids = [m.id for m in MUTANTS]
    assert len(set(ids)) == len(ids) and len(ids) >= 40


@pytest.mark.parametrize("mutant", MUTANTS, ids=lambda m: m.id)
def test_mutant_applies_exactly_once(mutant):
    text = (ROOT / mutant.path).read_text()
    assert text.count(mutant.old) == 1, f"{mutant.path}: the original text is found {text.count(mutant.old)} times"
    assert mutant.new != mutant.old
    for arg in mutant.tests:  # the selected test files exist
        if arg.startswith("tests/"):
            assert (ROOT / arg.split("::")[0]).is_file(), arg
