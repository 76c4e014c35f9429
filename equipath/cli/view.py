"""``equipath view OUT [--slide S]``: a local, offline viewer of a slide with every overlay equipath wrote.

The slide is served as DeepZoom tiles at full resolution, with the tumour heatmap, tissue mask, predicted
regions, detections and any other GeoJSON (segmentation regions, cell points) as layers that can be
toggled, with an opacity slider and a legend, and the run's model and options beside them. The server
binds to 127.0.0.1 only and fetches nothing from the network (OpenSeadragon is vendored in the package).
"""

import logging
import webbrowser

from equipath.viewer.layers import Run, find_runs
from equipath.viewer.server import ViewerServer

log = logging.getLogger(__name__)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "view", help="local slide viewer with equipath's overlays (heatmap, tissue, regions, detections)",
        description="Serve a slide and its equipath outputs to a browser on this machine (127.0.0.1): "
                    "DeepZoom tiles at full resolution, overlays with toggles, opacity and legends, and the "
                    "run's model and options. Stop it with Ctrl-C.")
    p.add_argument("out", help="an output folder: predict-slide's OUT (one sub-folder per slide) or one slide's "
                               "folder of outputs")
    p.add_argument("--slide", help="the slide file, when the path recorded in slide.json has moved (or the "
                                   "outputs do not record it); OUT must then be one slide's folder")
    p.add_argument("--port", type=int, default=8765, help="port on 127.0.0.1 (default 8765; 0 picks a free one)")
    p.add_argument("--open", action="store_true", help="open the page in the default browser")
    p.set_defaults(func=run)


def run(args) -> int:
    folders = find_runs(args.out)
    if args.slide is not None and len(folders) > 1:
        raise ValueError(f"--slide names one slide but {args.out} holds {len(folders)} slide folders: give one of "
                         f"them ({', '.join(f.name for f in folders[:3])}, ...) as OUT")
    runs = [Run(folder, slide=args.slide) for folder in folders]
    try:
        server = ViewerServer(runs, port=args.port)
    except OSError as exc:
        for r in runs:
            r.close()
        raise OSError(f"cannot listen on 127.0.0.1:{args.port} ({exc.strerror}): choose another --port "
                      f"(0 picks a free one)") from None
    print(f"equipath view: {len(runs)} slide(s) at {server.url}  (Ctrl-C stops)", flush=True)
    if args.open:
        webbrowser.open(server.url)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.httpd.server_close()
        for r in runs:
            r.close()
    return 0
