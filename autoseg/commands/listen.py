"""``autoseg listen``: a DICOM node that segments each series it receives (:mod:`autoseg.pacs.listener`)."""

from __future__ import annotations

import argparse
import signal
import threading

from autoseg.commands.predict import BACKEND_CHOICES, loaded_predictor


def add_parser(subparsers) -> None:
    """Register ``autoseg listen``."""
    parser = subparsers.add_parser(
        "listen", help="receive DICOM series by C-STORE, segment each, send the DICOM-SEG on",
        description=("A DICOM node (C-STORE SCP, C-ECHO): a series is complete when no instance of it arrived for "
                     "--idle seconds; it is then segmented with the model and its DICOM-SEG is C-STOREd to "
                     "--send-to. Received series, SEGs and failed series (with reason.txt) are kept under -o."))
    parser.add_argument("-m", "--model", required=True, help="model.zip from autoseg export, or a trained work folder")
    parser.add_argument("--trust-key", action="append", default=None, metavar="PUBLIC.pem",
                        help="open only a bundle signed by this key (as in autoseg predict)")
    parser.add_argument("--port", type=int, default=11112, help="DICOM port (default 11112; 0: a free one)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0 for the network)")
    parser.add_argument("--ae-title", default="AUTOSEG", help="this node's AE title (default AUTOSEG)")
    parser.add_argument("--send-to", default=None, metavar="AET@HOST:PORT",
                        help="node that receives the DICOM-SEGs, e.g. ORTHANC@pacs.local:4242 (default: keep them "
                             "under -o only)")
    parser.add_argument("--allow", nargs="+", default=None, metavar="AET",
                        help="calling AE titles accepted (default: any)")
    parser.add_argument("--idle", type=float, default=10.0,
                        help="seconds without a new instance after which a series is complete (default 10)")
    parser.add_argument("-o", "--output", default="autoseg_listen",
                        help="folder for received series, SEGs and failures (default ./autoseg_listen)")
    parser.add_argument("--keep-images", action="store_true", help="keep the received images of segmented series")
    parser.add_argument("--seg-concepts", default=None, help="JSON of coded concepts per class, as in autoseg predict")
    parser.add_argument("-c", "--configurations", nargs="+", default=None)
    parser.add_argument("-f", "--folds", nargs="+", default=None)
    parser.add_argument("--checkpoint", choices=["final", "best"], default=None)
    parser.add_argument("--device", default=None, help="cuda, cpu or mps (default: detected)")
    mirroring = parser.add_mutually_exclusive_group()
    mirroring.add_argument("--tta", nargs="?", const="all", default=None, metavar="AXES")
    mirroring.add_argument("--no-tta", action="store_true")
    parser.add_argument("--backend", choices=BACKEND_CHOICES, default="torch")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Handler of ``autoseg listen``."""
    # Deferred for start-up time: inference imports torch.
    from autoseg.pacs.dimse import Peer, require_pynetdicom
    from autoseg.pacs.listener import SeriesListener, log
    from autoseg.serving.http_server import is_loopback

    require_pynetdicom()
    send_to = Peer.parse(args.send_to) if args.send_to else None
    concepts = None
    if args.seg_concepts:
        from autoseg.io.dicom_seg import read_concept_mapping

        concepts = read_concept_mapping(args.seg_concepts)
    model, choice, predictor, device, mirroring_reason = loaded_predictor(args)
    listener = SeriesListener(model, predictor, args.output, args.ae_title, args.host, args.port, send_to,
                              args.allow, args.idle, args.keep_images, concepts)
    listener.start()
    print(f"models: {' + '.join(choice.configurations)} ({choice.source}), device {device}; {mirroring_reason}")
    print(f"listening as {listener.ae_title} on {args.host}:{listener.port} (C-STORE, C-ECHO), series complete after "
          f"{args.idle:g} s idle, SEGs to {send_to or args.output}; Ctrl-C stops", flush=True)
    if not args.allow and not is_loopback(args.host):
        log(f"warning: listening on {args.host} for any calling AE title; restrict them with --allow")
    stopped = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    try:
        stopped.wait()
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        listener.stop()
    print(f"stopped: {len(listener.segmented)} series segmented, {len(listener.failed)} failed", flush=True)
    if listener.failed:
        print(f"failed series are kept with their reason under {listener.store.failed}")
    return 0

