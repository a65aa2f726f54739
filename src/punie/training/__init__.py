"""The seed plan's names (`punie.training.server_config.ServerConfig`,
`punie.training.server.build_server_command`, `ServerProcess`), kept as re-exports of
`punie.serving`."""
