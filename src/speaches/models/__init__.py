"""Models: where their files come from and the one manager that loads and unloads them."""
