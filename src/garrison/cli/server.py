"""`garrison up`: the API, the governor and the dashboard on the embedded defaults, in one command.

One process runs the FastAPI app (uvicorn) and the governor's control loop (a thread); the governor's executor runs
serving workers and training jobs as processes pinned to this machine's devices. SIGINT or SIGTERM stops uvicorn,
then the governor, which stops its workers (what they hold goes back to the queue) and its jobs.
"""

from __future__ import annotations

import json
import signal
import threading
from pathlib import Path

import typer

from garrison.cli.common import err_console, fail


def register(app: typer.Typer) -> None:
    @app.command()
    def up(
        host: str = typer.Option("127.0.0.1", help="Address to listen on."),
        port: int = typer.Option(8000, help="Port to listen on."),
        store_url: str = typer.Option(None, "--store", help="Store URL (default: GARRISON_DB_URL or SQLite)."),
        power_cap_w: float = typer.Option(None, help="Fleet power cap in W (default: none, see --help)."),
        training_devices: int = typer.Option(None, help="Devices in the training pool (default: half, at least 1)."),
        slots: int = typer.Option(None, help="Devices to use (default: every GPU, else every CPU core)."),
        grace_period_s: float = typer.Option(5.0, help="Seconds a reclaimed device's requests get to finish."),
        slo_s: float = typer.Option(120.0, help="Target seconds from request to finished video."),
        cors_origin: list[str] = typer.Option(None, help="Allow this browser origin (repeatable; default: CORS off)."),
        as_json: bool = typer.Option(False, "--json", help="Print the URLs (and a new admin key) as JSON."),
    ) -> None:
        """Serve the Videos API, run the governor and the dashboard; Ctrl-C stops all of it cleanly."""
        import uvicorn

        from garrison.energy.power import DevicePowerSampler
        from garrison.governor.demo import home_pools_for, power_models_for
        from garrison.governor.executors.local import LocalExecutor
        from garrison.governor.runtime import GovernorRuntime
        from garrison.governor.state import GovernorConfig, GovernorConfigError
        from garrison.hardware.cpu import CpuPowerModel
        from garrison.hardware.devices import fleet_devices
        from garrison.hardware.power_limit import CpuSlotLimiter
        from garrison.server.app import configure_server_process, create_app
        from garrison.server.logs import configure_json_logging
        from garrison.server.policy_pool import policy_processes_from_env
        from garrison.store import StoreError, default_url, open_store

        if not 0 < port < 65536:
            fail(f"--port must be 1..65535, got {port}")
        try:
            discovery = fleet_devices(slots)
        except ValueError as e:
            fail(str(e))
        devices = discovery.devices
        url = store_url or default_url()
        try:
            store = open_store(url)
        except (StoreError, ValueError) as e:
            fail(f"cannot open the store {url}: {e}")
        admin_key = None
        if not any(t.admin and not t.revoked for t in store.list_tenants()):
            _, admin_key = store.create_tenant(f"admin-{len(store.list_tenants())}", admin=True)

        cpu_power = CpuPowerModel.from_env()
        models = power_models_for(devices, cpu_power)
        home = home_pools_for(devices)
        if training_devices is not None:
            if not 0 <= training_devices < len(devices):
                fail(f"--training-devices must leave serving at least one of the {len(devices)} devices")
            home = {d.id: ("training" if i < training_devices else "serving") for i, d in enumerate(devices)}
        n_training = sum(1 for pool in home.values() if pool == "training")
        if power_cap_w is not None and not power_cap_w > 0:
            fail("--power-cap-w must be a positive number of watts")
        # No cap asked for: twice the fleet's full-load draw, which no reading can reach (the controller stays idle).
        cap_w = power_cap_w if power_cap_w is not None else 2 * sum(m.busy_w for m in models.values())
        config = GovernorConfig(
            power_cap_w=cap_w,
            training_guarantee=n_training,
            serving_floor=len(devices) - n_training,
            grace_period_s=grace_period_s,
            slo_s=slo_s,
        )
        try:
            policy_processes = policy_processes_from_env()
        except ValueError as e:
            fail(str(e))
        api = create_app(store, cors_origins=cors_origin or None, policy_processes=policy_processes)
        content_dir = Path(api.state.content_dir)
        limiter = CpuSlotLimiter(cpu_power, owner=f"up-{port}") if discovery.backend == "cpu" else None
        executor = LocalExecutor(devices, store, url, content_dir, content_dir.parent / "run", cpu_limiter=limiter)
        try:
            runtime = GovernorRuntime(
                store, executor, config, home, DevicePowerSampler(devices, cpu_power), models, cpu_limiter=limiter
            )
        except GovernorConfigError as e:
            fail(str(e))
        runtime.recover()  # a governor that died before us left workers and jobs: take them over
        stop = threading.Event()
        governor = threading.Thread(target=runtime.run, args=(stop,), name="governor", daemon=True)

        base = f"http://{host}:{port}"
        urls = {
            "api": f"{base}/v1",
            "dashboard": f"{base}/dashboard",
            "metrics": f"{base}/metrics",
            "docs": f"{base}/docs",
        }
        info = {**urls, "store": url, "devices": [d.id for d in devices], "pools": home, "power_cap_w": cap_w}
        if admin_key:
            info["admin_api_key"] = admin_key
        if as_json:
            print(json.dumps(info), flush=True)
        else:
            err_console.print(f"garrison up on {len(devices)} device(s) ({discovery.reason})", highlight=False)
            for name, value in urls.items():
                err_console.print(f"  {name:9s} {value}", highlight=False)
            if admin_key:
                err_console.print(f"  admin key (shown once): [bold]{admin_key}[/]", highlight=False)
        configure_json_logging()
        configure_server_process()
        governor.start()
        server = uvicorn.Server(uvicorn.Config(api, host=host, port=port, log_config=None, access_log=False))
        # uvicorn shuts down on SIGINT/SIGTERM, then re-raises the signal to the handler that was there before it:
        # make that one a no-op, so the governor below is stopped (workers requeue, jobs stop) before we exit.
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda signum, frame: None)
        try:
            server.run()
        finally:
            stop.set()
            governor.join(timeout=60)
            if limiter is not None:
                limiter.close()
            store.close()
        if not server.started:
            fail(f"could not listen on {host}:{port} (in use?)")
