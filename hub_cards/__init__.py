"""Model-card templates, installed as the package ``ibzoo.hub_cards`` (see pyproject.toml's package-dir)."""
