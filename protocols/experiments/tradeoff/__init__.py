"""The privacy/robustness sweep ``fedaudit tradeoff``: grid, cells (running them), summary (results.csv), plots, command.
It may import the experiments below it (audit, options), the runner, simulation and packages below; never the CLI."""
from .grid import (CELL_FORMAT, DEFAULT_GRID, DPSetting, Grid, cell_key, check_cells, describe_cell, expand, group_of,
                   load_grid, make_grid, parse_dp, refusal)
from .cells import PASSIVE_VIEWS, finished, leakage, leakage_ci, run_cell, run_grid
from .summary import CSV_FIELDS, METRICS, aggregate, format_summary, write_csv
from .plots import (pareto_front, plot_accuracy_vs_epsilon, plot_mia_vs_accuracy, plot_privacy_vs_robustness,
                    plot_robustness_heatmap, write_plots)
from .command import add_tradeoff_parser, cmd_tradeoff, grid_from_args

__all__ = ["Grid", "DPSetting", "parse_dp", "load_grid", "make_grid", "expand", "cell_key", "group_of", "refusal",
           "check_cells", "describe_cell", "run_cell", "finished", "run_grid", "leakage", "leakage_ci", "aggregate", "write_csv", "format_summary", "write_plots",
           "pareto_front", "plot_accuracy_vs_epsilon", "plot_mia_vs_accuracy", "plot_robustness_heatmap",
           "plot_privacy_vs_robustness", "add_tradeoff_parser", "grid_from_args", "cmd_tradeoff", "CELL_FORMAT",
           "DEFAULT_GRID", "PASSIVE_VIEWS", "METRICS", "CSV_FIELDS"]
