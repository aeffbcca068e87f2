"""Control plane: configuration, CLI, supervision, storage, interaction log, REST API."""
