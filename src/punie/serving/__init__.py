"""mlx_lm server: configuration, command line, process lifecycle and the mlx environment."""
