"""The calculator's and the clock's errors name the form they would have read, when there is one, so an agent
can mend its call from the error alone. A bare zone name is never guessed by its spelling (a close spelling of
a city is often another city); a close spelling of a made-up `Region/City` name can still be wrong."""
import re

import pytest

from nanoagent.agent.calculator import CalculatorError, calculator, evaluate, suggest_expression
from nanoagent.agent.clock import get_current_time, resolve_zone, suggest_zone


@pytest.mark.parametrize("written, meant", [
    ("17 x 23", "17*23"), ("17 times 23", "17*23"), ("(3+4) X 2", "(3+4)*2"), ("100 divided by 4", "100/4"),
    ("2 to the power of 10", "2**10"), ("15% of 80", "15/100*80"), ("15%", "15/100"), ("$12.50*3", "12.50*3"),
    ("1,200*3", "1200*3"), ("€1,250,000 / 5", "1250000 / 5")])
def test_an_unreadable_expression_gets_the_form_that_reads(written, meant):
    assert suggest_expression(written) == meant
    with pytest.raises(CalculatorError) as e:
        evaluate(written)
    assert str(e.value).endswith(f"; did you mean '{meant}'?")
    assert evaluate(meant) == evaluate(meant.replace(" ", ""))


@pytest.mark.parametrize("written", ["1/0", "foo + 1", "17 x", "import os", "x times y", "2 ** 10 ** 10 ** 10"])
def test_no_suggestion_without_a_rewrite_that_works(written):
    assert suggest_expression(written) is None
    with pytest.raises(CalculatorError) as e:
        evaluate(written)
    assert "did you mean" not in str(e.value)


def test_what_reads_already_is_untouched():
    assert calculator("17*23") == "391" and suggest_expression("17*23") is None
    assert calculator("7 % 3") == "1"  # % between numbers stays the remainder


@pytest.mark.parametrize("written, meant", [
    ("Jakarta", "Asia/Jakarta"), ("New York", "America/New_York"), ("america/new york", "America/New_York"),
    ("America/ Manila", "Asia/Manila"), ("America/Buenos_Ribera", "America/Buenos_Aires"),
    ("Tokyo, Japan", "Asia/Tokyo"), ("Sao Paulo", "America/Sao_Paulo")])
def test_a_city_or_a_misspelled_zone_gets_the_zone(written, meant):
    assert suggest_zone(written) == meant
    resolve_zone(meant)
    with pytest.raises(ValueError, match=re.escape(f"did you mean '{meant}'?")):
        get_current_time(written)


@pytest.mark.parametrize("written", ["Mumbai", "Atlantis", "Asia/Qwertyuiop"])
def test_no_zone_is_guessed_from_a_near_spelling_of_a_bare_name(written):
    # "Mumbai" is one letter from "Dubai" and in Asia/Kolkata: a guess by spelling would send the agent wrong
    assert suggest_zone(written) is None
    with pytest.raises(ValueError, match="use an IANA name"):
        resolve_zone(written)


def test_a_long_rewrite_is_not_shown_cut():
    written = " + ".join(["12 x 3"] * 8)  # the rewrite is longer than an error shows
    assert suggest_expression(written) and len(suggest_expression(written)) > 40
    with pytest.raises(CalculatorError) as e:
        evaluate(written)
    assert "did you mean" not in str(e.value) and len(str(e.value)) < 120
