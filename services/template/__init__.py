"""The template service: template documents, their immutable versions, and
expansion of a version plus variables into a render-ready HTML document."""
