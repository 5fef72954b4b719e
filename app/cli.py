"""`loralab serve`: run the book with uvicorn; `loralab worker`: train runs from the shared queue;
`loralab cache-model`: the lab's set-up step; `loralab export-base`: the lab's exact weights
as a Transformers folder."""

from __future__ import annotations

import argparse

SHUTDOWN_GRACE_S = 3  # seconds open requests (event streams) get after SIGTERM


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="loralab", description="LoRA Lab, the PEFT textbook")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve the book over HTTP")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--reload", action="store_true", help="restart on code changes (development)")
    worker = commands.add_parser("worker", help="train runs from the shared queue (LORALAB_QUEUE_URL)")
    worker.add_argument("--name", default=None, help="this worker's name in the queue (default: host-pid-random)")
    commands.add_parser("render-maths", help="typeset every chapter's maths with KaTeX (Node) into the cache")
    commands.add_parser("cache-model", help="cache the lab's base model (set-up step; a no-op when current)")
    export = commands.add_parser("export-base", help="write the lab's base model as a Transformers folder (float32)")
    export.add_argument("folder", help="where to write it (created if missing)")
    args = parser.parse_args(argv)
    if args.command == "render-maths":
        render_maths()
        return

    if args.command == "worker":
        import logging

        from app.lab_queue import run_worker
        from app.settings import get_settings

        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
        run_worker(get_settings(), name=args.name)
        return

    if args.command == "cache-model":
        from app.settings import get_settings
        from training.model_cache import build_cache

        settings = get_settings()
        if settings.model_path is not None:
            print("LORALAB_MODEL_PATH is set: the lab trains that checkpoint; nothing to cache")
            return
        build_cache(settings.lab_model_dir)
        print("the lab's model is cached (LORALAB_MODEL_CACHE / LORALAB_DATA_DIR choose where)")
        return

    if args.command == "export-base":
        from app.settings import get_settings
        from training.model_cache import export_base

        export_base(get_settings().lab_model_dir, args.folder)
        print(f"the lab's base model is in {args.folder}: AutoModelForCausalLM.from_pretrained() loads it")
        return

    import uvicorn

    # The GPU planner's form carries a pasted config.json (at most 8,000 characters) in its URL:
    # allow request heads up to 64 KiB instead of h11's 16 KiB. A reader's open event stream
    # lasts as long as a run: on SIGTERM, wait 3 s for requests, then close the streams and shut
    # down (marking unfinished runs) well inside `docker stop`'s 10 s, instead of never.
    uvicorn.run("app.main:create_app", factory=True, host=args.host, port=args.port, reload=args.reload,
                h11_max_incomplete_event_size=64 * 1024, timeout_graceful_shutdown=SHUTDOWN_GRACE_S)


def render_maths() -> None:
    """Fill the maths cache at set-up, so the server needs no Node to serve typeset chapters."""
    from app.main import create_app

    library = create_app().state.library()
    untypeset = [c.meta.label for c in library.chapters if c.client_maths]
    if untypeset:
        raise SystemExit(f"render-maths: formulas left for the browser in {', '.join(untypeset)} (is node installed?)")
    print(f"render-maths: every formula of {len(library.chapters)} chapters is typeset and cached")


if __name__ == "__main__":
    main()
