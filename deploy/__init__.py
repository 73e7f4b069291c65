"""Deployment: the Helm chart under helm/litho and `make chart`'s check of it."""
