"""The OHIF viewer: installed from the npm registry, served at /viewer over the node's DICOMweb.

``pacsnode viewer install`` runs ``npm pack @ohif/app@<OHIF_VERSION>``, unpacks the prebuilt
application (``package/dist``), moves it from the site root to /viewer (webpack's public path,
``PUBLIC_URL`` and the absolute asset links in index.html and manifest.json) and writes an
``app-config.js`` whose one data source is this node's /dicom-web, at whatever address the
browser reached the node. Nothing of it is committed to the repository.

The server sends files from the installed folder; any other path under /viewer/ is a route of
the single-page application and gets index.html. Without an installed viewer, /viewer says how
to install it (503).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

from aiohttp import web

OHIF_PACKAGE = "@ohif/app"
# Pinned: the install rewrites this build's public path; a new version must be checked with
# tests/web/test_viewer.py before the pin moves.
OHIF_VERSION = "3.13.2"
MOUNT = "/viewer"
MARKER = "pacsnode-viewer.json"

APP_CONFIG = """/* Written by `pacsnode viewer install`: OHIF on this node's DICOMweb service. */
(function () {
  var root = window.location.origin + '/dicom-web';
  window.config = {
    name: 'pacsnode',
    routerBasename: '%(mount)s',
    extensions: [],
    modes: [],
    customizationService: {},
    showStudyList: true,
    maxNumberOfWebWorkers: 3,
    showWarningMessageForCrossOrigin: false,
    showCPUFallbackMessage: true,
    showLoadingIndicator: true,
    strictZSpacingForVolumeViewport: true,
    groupEnabledModesFirst: true,
    investigationalUseDialog: { option: 'never' },
    maxNumRequests: { interaction: 100, thumbnail: 75, prefetch: 25 },
    showErrorDetails: 'always',
    defaultDataSourceName: 'pacsnode',
    dataSources: [
      {
        namespace: '@ohif/extension-default.dataSourcesModule.dicomweb',
        sourceName: 'pacsnode',
        configuration: {
          friendlyName: 'pacsnode',
          name: 'pacsnode',
          wadoUriRoot: root,
          qidoRoot: root,
          wadoRoot: root,
          qidoSupportsIncludeField: true,
          supportsReject: false,
          imageRendering: 'wadors',
          thumbnailRendering: 'thumbnail',
          thumbnailRequestStrategy: 'fetch',
          enableStudyLazyLoad: true,
          supportsFuzzyMatching: true,
          supportsWildcard: true,
          staticWado: false,
          singlepart: 'bulkdata,video',
          bulkDataURI: { enabled: true },
          omitQuotationForMultipartRequest: true,
        },
      },
    ],
    httpErrorHandler: function (error) { console.warn('DICOMweb error', error && error.status); },
  };
})();
"""

NOT_INSTALLED = """<!doctype html><html><head><meta charset="utf-8"><title>Viewer not installed</title></head>
<body style="font-family: sans-serif; max-width: 40em; margin: 3em auto">
<h1>The viewer is not installed</h1>
<p>This node serves the OHIF viewer once it is installed (about 50 MB from the npm registry):</p>
<pre>pacsnode viewer install --data %(data)s</pre>
<p>then reload this page. The DICOMweb service runs without it at <a href="/dicom-web/studies">/dicom-web</a>.</p>
</body></html>
"""


class ViewerInstallError(RuntimeError):
    pass


def default_dir(data: Path) -> Path:
    """Where the viewer is looked for: ``$PACSNODE_VIEWER_DIR``, else ``<data>/viewer``."""
    env = os.environ.get("PACSNODE_VIEWER_DIR")
    return Path(env) if env else Path(data) / "viewer"


def installed_version(folder: Path) -> str | None:
    try:
        return json.loads((folder / MARKER).read_text())["version"]
    except (OSError, ValueError, KeyError):
        return None


# -- install -------------------------------------------------------------------------------


def _npm() -> str:
    npm = shutil.which("npm")
    if npm is None:
        raise ViewerInstallError("npm is not installed (Debian: apt-get install npm)")
    return npm


def _rebase(dist: Path, mount: str) -> None:
    """Move the prebuilt app from "/" to ``mount``/."""
    prefix = mount.rstrip("/") + "/"
    index = dist / "index.html"
    html = index.read_text(encoding="utf-8")
    html = html.replace('window.PUBLIC_URL="/"', f'window.PUBLIC_URL="{prefix}"')
    html = re.sub(r'(\s(?:src|href|content))="/(?!/)', lambda m: f'{m.group(1)}="{prefix}', html)
    if f'window.PUBLIC_URL="{prefix}"' not in html:
        raise ViewerInstallError("index.html has no PUBLIC_URL to rewrite: is the pinned version right?")
    index.write_text(html, encoding="utf-8")
    patched = 0
    for js in dist.glob("*.js"):
        text = js.read_text(encoding="utf-8", errors="surrogateescape")
        if '__webpack_require__.p = "/";' in text:
            js.write_text(text.replace('__webpack_require__.p = "/";', f'__webpack_require__.p = "{prefix}";'),
                          encoding="utf-8", errors="surrogateescape")  # fmt: skip
            patched += 1
    if not patched:
        raise ViewerInstallError("no webpack public path found to rewrite: is the pinned version right?")
    for css in dist.glob("*.css"):  # fonts and images named from the site root
        text = css.read_text(encoding="utf-8")
        css.write_text(re.sub(r"url\((['\"]?)/(?!/)", lambda m: f"url({m.group(1)}{prefix}", text), encoding="utf-8")
    manifest = dist / "manifest.json"
    if manifest.exists():
        manifest.write_text(manifest.read_text(encoding="utf-8").replace('"/assets/', f'"{prefix}assets/'), encoding="utf-8")


def install(target: Path, version: str = OHIF_VERSION, log=print) -> Path:
    """Fetch ``@ohif/app@version`` with npm, rebase it to /viewer and install it at ``target``."""
    target = Path(target).resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".viewer-", dir=target.parent) as tmp:
        work = Path(tmp)
        log(f"fetching {OHIF_PACKAGE}@{version} from the npm registry ...")
        proc = subprocess.run(
            [_npm(), "pack", f"{OHIF_PACKAGE}@{version}", "--pack-destination", str(work), "--silent"],
            cwd=work, capture_output=True, text=True, timeout=900,
        )  # fmt: skip
        tarballs = list(work.glob("*.tgz"))
        if proc.returncode != 0 or not tarballs:
            raise ViewerInstallError(f"npm pack {OHIF_PACKAGE}@{version} failed: {(proc.stderr or proc.stdout).strip()[-800:]}")
        with tarfile.open(tarballs[0]) as tar:
            members = [m for m in tar.getmembers() if m.name.startswith("package/dist/")]
            if not members:
                raise ViewerInstallError(f"{tarballs[0].name} has no package/dist: not a prebuilt viewer")
            tar.extractall(work, members=members, filter="data")
        tarballs[0].unlink()
        dist = work / "package" / "dist"
        _rebase(dist, MOUNT)
        (dist / "app-config.js").write_text(APP_CONFIG % {"mount": MOUNT}, encoding="utf-8")
        for name in ("_redirects", "_headers", "serve.json"):  # other hosts' deploy files
            (dist / name).unlink(missing_ok=True)
        (dist / MARKER).write_text(json.dumps({"package": OHIF_PACKAGE, "version": version, "mount": MOUNT}))
        old = work / "old"
        if target.exists():
            target.rename(old)
        dist.rename(target)
    log(f"installed {OHIF_PACKAGE}@{version} in {target}")
    return target


# -- serving -------------------------------------------------------------------------------

_CACHEABLE = re.compile(r"\.[0-9a-f]{16}\.js$|\.[0-9a-f]{16}\.wasm$|^[0-9a-f]{16}\.(wasm|woff2?)$")


async def serve(request: web.Request) -> web.StreamResponse:
    from pacsnode.web.app import ARCHIVE, VIEWER_DIR

    folder: Path | None = request.app[VIEWER_DIR]
    if folder is None or not (folder / "index.html").is_file():
        data = request.app[ARCHIVE].config.data
        return web.Response(status=503, text=NOT_INSTALLED % {"data": data}, content_type="text/html")
    tail = request.match_info.get("tail", "")
    if tail:
        candidate = (folder / tail).resolve()
        try:
            candidate.relative_to(folder.resolve())
        except ValueError:
            raise web.HTTPNotFound() from None
        if candidate.is_file():
            headers = {}
            if _CACHEABLE.search(candidate.name):
                headers["Cache-Control"] = "public, max-age=31536000, immutable"
            elif candidate.name in ("app-config.js", "index.html"):
                headers["Cache-Control"] = "no-cache"
            return web.FileResponse(candidate, headers=headers)
        if "." in tail.rsplit("/", 1)[-1]:
            raise web.HTTPNotFound()  # a missing asset, not an application route
    # A route of the single-page application (/viewer/viewer?StudyInstanceUIDs=...).
    return web.FileResponse(folder / "index.html", headers={"Cache-Control": "no-cache"})


async def _redirect(request: web.Request) -> web.StreamResponse:
    raise web.HTTPFound(MOUNT + "/" + (f"?{request.query_string}" if request.query_string else ""))


def add_routes(app: web.Application) -> None:
    app.router.add_get(MOUNT, _redirect)
    app.router.add_get(MOUNT + "/", serve)
    app.router.add_get(MOUNT + "/{tail:.*}", serve)
