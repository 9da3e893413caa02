"""The web client: static files shipped in the package and the routes that serve them.

Nothing here is built: `static/` holds plain HTML, CSS and ES modules that a browser loads as
they are. `setup_web_client(app)` registers `/`, `/sw.js` and `/static/...`.
"""

from node.web.routes import setup_web_client

__all__ = ["setup_web_client"]
