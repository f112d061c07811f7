"""`syconn-ng serve ANALYSIS_DIR`: the review page (Neuroglancer beside the wiring matrix) and its JSON API."""

from __future__ import annotations

import click


@click.command("serve")
@click.argument("analysis_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--port", type=int, default=None, help="TCP port (default: [serve] port; 0 = any free port).")
@click.option("--bind", default=None, help="address to listen on (default: [serve] bind, 127.0.0.1); others need a token.")
@click.option("--token", default=None, help="access token for changes (default: [serve] token_file, else a random one).")
@click.option("--open", "open_browser", is_flag=True, help="open the page in a web browser.")
@click.option("--no-viewer", is_flag=True, help="serve the API and matrix only, without Neuroglancer.")
@click.option("--export", "export_dir", type=click.Path(file_okay=False), default=None,
              help="write the reviewed synapse table, cells and matrices into this folder and exit (no server).")
def serve(analysis_dir, port, bind, token, open_browser, no_viewer, export_dir):
    """Serve ANALYSIS_DIR for review: prints the page URL and the token; Ctrl-C stops."""
    if export_dir is not None:
        from syconn_ng.analysis import Analysis
        from syconn_ng.serve.review import ReviewedAnalysis, export_reviewed

        reviewed = ReviewedAnalysis(Analysis.open(analysis_dir))
        for path in export_reviewed(reviewed, export_dir):
            click.echo(str(path))
        return
    from syconn_ng.serve.app import ReviewServer

    server = ReviewServer(analysis_dir, port=port, bind=bind, token=token, viewer=not no_viewer).start()
    _stop_on_signals()
    click.echo(f"review page: {server.page_url}", nl=True)
    click.echo(f"token: {server.token}")
    if server.ctx.viewer_url:
        click.echo(f"neuroglancer: {server.ctx.viewer_url}")
    click.echo(f"api: {server.url}/api/v1/health", nl=True)
    if open_browser:
        import webbrowser

        webbrowser.open(server.page_url)
    server.wait()


def _stop_on_signals():
    """Ctrl-C (SIGINT) and SIGTERM stop the server cleanly, even when started from a shell that ignores SIGINT
    for background jobs (`syconn-ng serve ... &`)."""
    import signal

    def stop(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
