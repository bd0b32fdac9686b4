"""python -m compare [NAME ...]: the comparison of HEAD's experiments (compare/report.py); nothing trains."""
import sys

from compare.report import exp_records, main
from compare.table import MODELS
from core.cli import run

run(lambda params: main(params, exp_records(), tuple(sys.argv[1:]) or MODELS))
