"""``autoseg serve``: segmentation as an HTTP service (:mod:`autoseg.serving.http_server`)."""

from __future__ import annotations

import argparse
import os
import signal
import threading
from pathlib import Path

from autoseg.commands.predict import BACKEND_CHOICES, loaded_predictor
from autoseg.errors import AutosegInputError

#: Environment variable holding the access token (preferred to a command-line argument, which
#: other users of the machine can read in the process list).
TOKEN_VARIABLE = "AUTOSEG_SERVE_TOKEN"


def add_parser(subparsers) -> None:
    """Register ``autoseg serve``."""
    parser = subparsers.add_parser(
        "serve", help="segment scans sent over HTTP (POST /segment) with a trained model",
        description=("Load a model once (a model.zip from autoseg export, or a work folder) and answer "
                     "POST /segment: the request body is a scan (NIfTI, NRRD, MHA, or a zip of a DICOM series), "
                     "the response the segmentation in the same format with the per-case report in the "
                     "X-Autoseg-Report header. GET /health reports status and queue. Requests are predicted one "
                     "at a time; up to --queue wait on disk, more get 503. With a token (AUTOSEG_SERVE_TOKEN or "
                     "--token-file) every /segment request needs 'Authorization: Bearer TOKEN'."))
    parser.add_argument("-m", "--model", required=True, help="model.zip from autoseg export, or a trained work folder")
    parser.add_argument("--trust-key", action="append", default=None, metavar="PUBLIC.pem",
                        help="open only a bundle signed by this Ed25519 public key (a file, or a folder of *.pem/*.pub "
                             "keys; repeatable; also $AUTOSEG_TRUSTED_KEYS); unsigned bundles and work folders are "
                             "refused (pip install 'autoseg[sign]')")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0 for the network)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one)")
    parser.add_argument("--token-file", default=None,
                        help=f"file holding the access token (default: ${TOKEN_VARIABLE} if set, else no token)")
    parser.add_argument("--no-token", action="store_true",
                        help="allow --host beyond this machine without a token (anyone reaching the port can send "
                             "scans and read segmentations; a warning is printed)")
    parser.add_argument("--max-upload-mb", type=float, default=1024, help="largest upload accepted, MiB (default 1024)")
    parser.add_argument("--max-megavoxels", type=float, default=550,
                        help="most voxels an upload may decode to, millions (default 550, above a 512x512x2048 CT)")
    parser.add_argument("--upload-timeout", type=float, default=600,
                        help="longest time one upload may take, seconds (default 600); slower than 64 KiB/s after "
                             "30 s is cut off earlier")
    parser.add_argument("--queue", type=int, default=16,
                        help="requests accepted at once, one predicting and the rest waiting on disk (default 16)")
    parser.add_argument("-c", "--configurations", nargs="+", default=None,
                        help="configuration(s) to use (default: from the model's inference plan)")
    parser.add_argument("-f", "--folds", nargs="+", default=None, help="folds to average (default: every one)")
    parser.add_argument("--checkpoint", choices=["final", "best"], default=None)
    parser.add_argument("--device", default=None, help="cuda, cpu or mps (default: detected)")
    mirroring = parser.add_mutually_exclusive_group()
    mirroring.add_argument("--tta", nargs="?", const="all", default=None, metavar="AXES",
                           help="test-time mirroring as in autoseg predict (default: where cross-validation "
                                "measured a gain)")
    mirroring.add_argument("--no-tta", action="store_true", help="no test-time mirroring")
    parser.add_argument("--backend", choices=BACKEND_CHOICES, default="torch",
                        help="where the networks run on a CPU, as in autoseg predict")
    parser.add_argument("--quiet", action="store_true", help="no line per request on stderr")
    parser.set_defaults(handler=run)


def read_token(token_file: str | None) -> str | None:
    """The access token: the first line of ``token_file``, else ``$AUTOSEG_SERVE_TOKEN``, else None."""
    if token_file:
        try:
            token = Path(token_file).read_text().strip()
        except OSError as error:
            raise AutosegInputError(f"{token_file}: cannot read the token file ({error.strerror})") from None
        if not token:
            raise AutosegInputError(f"{token_file}: the token file is empty")
        return token
    return os.environ.get(TOKEN_VARIABLE) or None


def run(args: argparse.Namespace) -> int:
    """Handler of ``autoseg serve``."""
    # Deferred for start-up time: inference imports torch.
    from autoseg.serving.http_server import is_loopback, open_access_problem, serve
    from autoseg.serving.service import SegmentationService

    if args.max_upload_mb <= 0:
        raise AutosegInputError("--max-upload-mb must be positive")
    if args.max_megavoxels <= 0:
        raise AutosegInputError("--max-megavoxels must be positive")
    token = read_token(args.token_file)
    problem = open_access_problem(args.host, token, args.no_token)
    if problem:  # before the model is loaded
        raise AutosegInputError(problem)
    model, choice, predictor, device, mirroring_reason = loaded_predictor(args)
    service = SegmentationService(model, predictor, int(args.max_upload_mb * 2**20), args.queue,
                                  max_voxels=int(args.max_megavoxels * 1e6), model_name=Path(args.model).name)
    try:
        server = serve(service, args.host, args.port, token, log=not args.quiet, upload_seconds=args.upload_timeout,
                       allow_unauthenticated=args.no_token)
    except AutosegInputError:
        service.close()
        raise
    if token is None and not is_loopback(args.host):
        print(f"WARNING: serving {args.host} without a token (--no-token): anyone who reaches port {args.port} can "
              "send scans and read their segmentations", flush=True)
    print(f"models: {' + '.join(choice.configurations)} ({choice.source}), postprocessing "
          f"{choice.postprocessing or 'none'}, device {device}; {mirroring_reason}")
    print(f"serving on {server.url} (POST /segment, GET /health), token {'required' if token else 'not required'}, "
          f"uploads up to {args.max_upload_mb:g} MiB, {args.queue} requests at once; Ctrl-C stops", flush=True)

    def stop(*_) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        server.server_close()
        service.close()
    print(f"stopped: {service.served} served, {service.failed} refused as bad uploads or failed", flush=True)
    return 0
