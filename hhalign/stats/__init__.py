"""The analysis of evaluation runs: statistics (:mod:`.inference`), rates and comparisons (:mod:`.metrics`),
generated claims, judges' agreement, ratings from votes, and the tables, plots and reports that show them. The run
that produces the records lives in :mod:`hhalign.eval`."""
