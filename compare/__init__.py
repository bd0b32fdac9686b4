"""The comparison of the backbones: which one to fine-tune, under params.yaml's `compare` limits.

Reads the project's DVC experiments (one per backbone, named after it): their params and metrics through
`dvc.api.exp_show`, and what each was measured under from the experiment's own metrics/conditions/*.json.
Writes reports/comparison.md (conditions, recommendation, tables, figures), reports/comparison.csv,
reports/comparison_conditions.csv, and plots/compare/*.png with plots/compare/pareto.csv (DVC plots).
The models are core.registry's: a backbone added there is benchmarked and compared too.

  python -m compare [NAME ...]
      the comparison again from the experiments (default: every backbone); nothing trains
  python -m compare.benchmark [--models NAME ...] [-S key=value ...]
      what `make benchmark` runs: every backbone through the chain as a DVC experiment, then the comparison

table.py holds the pure table and recommendation, figures.py the figures, report.py the command that reads
the experiments and writes the files, benchmark.py the runner. None of them loads TensorFlow.
"""
