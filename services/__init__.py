"""Litho's services. Each subpackage is one deployable service with one
composition root (``_app.py``) and ``python -m services.<name>`` as its entry
point; ``python -m services`` starts the whole stack for development."""
