"""Server-rendered pages for subscribers (Jinja2, no JavaScript framework)."""
