"""Entry point: `python server.py --port N` (normally run through ./start)."""
import argparse
import logging
import os
import signal
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def _watch_stdin():
    try:
        while sys.stdin.buffer.read(65536):
            pass
    except Exception:  # noqa: BLE001
        pass
    logging.getLogger("emulator").info("stdin closed: exiting")
    os._exit(0)


def _watch_parent(pid):
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            logging.getLogger("emulator").info("parent %s gone: exiting", pid)
            os._exit(0)
        except PermissionError:
            pass
        time.sleep(0.5)


def main():
    ap = argparse.ArgumentParser(description="ssm-autopilot local AWS emulator (moto + emulated SSM)")
    ap.add_argument("--port", type=int, default=5555, help="0 picks a free port")
    ap.add_argument("--host", default="127.0.0.1", help="bind address (keep it on loopback)")
    ap.add_argument("--exit-on-stdin-close", action="store_true", help="exit when stdin reaches EOF")
    ap.add_argument("--parent-pid", type=int, default=None, help="exit when this process is gone")
    ap.add_argument("--log-requests", action="store_true", help="log every request to stderr")
    args = ap.parse_args()

    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if not args.log_requests:
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
    os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")
    os.environ.setdefault("MOTO_ALLOW_NONEXISTENT_REGION", "true")

    from werkzeug.serving import make_server
    from moto.moto_server.werkzeug_app import MotoRequestHandler

    from ssm_emulator.app import EmulatorApp
    from ssm_emulator.validation import model

    app = EmulatorApp()
    model()   # load the SSM service model before announcing readiness
    server = make_server(args.host, args.port, app, threaded=True, request_handler=MotoRequestHandler)
    server.daemon_threads = True
    port = server.server_address[1]

    def _stop(signum, frame):
        logging.getLogger("emulator").info("signal %s: exiting", signum)
        os._exit(0)

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    if args.exit_on_stdin_close:
        threading.Thread(target=_watch_stdin, daemon=True).start()
    if args.parent_pid:
        threading.Thread(target=_watch_parent, args=(args.parent_pid,), daemon=True).start()

    sys.stdout.write(f"EMULATOR_READY http://127.0.0.1:{port}\n")
    sys.stdout.flush()
    logging.getLogger("emulator").info("listening on %s:%s", args.host, port)
    server.serve_forever()


if __name__ == "__main__":
    main()
