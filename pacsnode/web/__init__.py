"""DICOMweb (QIDO-RS, WADO-RS, WADO-URI, STOW-RS) and the OHIF viewer, on aiohttp.

``build_app(archive)`` returns the aiohttp application; ``pacsnode.dimse.server`` runs it on
each worker's event loop, on the HTTP socket the parent bound. See docs/dicomweb.md.
"""
from pacsnode.web.app import ARCHIVE, DICOMWEB_ROOT, build_app

__all__ = ["ARCHIVE", "DICOMWEB_ROOT", "build_app"]
