"""Rounding for the chapters' estimates: as many figures as the assumptions support."""
import math

import pytest

from ftrag.book import percent, significant


def test_significant_keeps_only_the_leading_figures():
    assert significant(10_000_489) == 10_000_000
    assert significant(1027.9, 3) == 1030
    assert significant(-0.0123456, 2) == -0.012
    assert significant(0.0) == 0.0 and math.isinf(significant(math.inf))
    with pytest.raises(ValueError):
        significant(5.0, 0)


def test_percent_never_rounds_a_small_share_to_zero():
    assert percent(0.00003) == "0.003%"
    assert percent(0.000143) == "0.01%"
    assert percent(0.356) == "40%" and percent(0.356, 2) == "36%"
    assert percent(1.0) == "100%" and percent(0.0) == "0%"
