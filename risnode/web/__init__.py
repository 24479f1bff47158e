"""HTTP on the shared asyncio loop: the REST API and the front-desk page."""
