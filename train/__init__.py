"""The `arkd` command line: configs, runs, TensorBoard, checkpoints, comparisons and plots."""
